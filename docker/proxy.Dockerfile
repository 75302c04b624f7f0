# Image of configurable-http-proxy (chart value proxy.image), at the version of proxy/package.json
# with every dependency pinned by proxy/package-lock.json (npm ci):
#   docker build -f docker/proxy.Dockerfile -t REGISTRY/configurable-http-proxy:5.3.0 docker/proxy
# BASE: an image with Node.js >= 20.19 and npm (node:20-slim elsewhere; scripts/build-images
# passes a Debian base with the official Node.js build, made without a registry of images).
ARG BASE=node:20-slim

FROM ${BASE} AS build
WORKDIR /opt/chp
COPY package.json package-lock.json ./
# NODE_EXTRA_CA_CERTS: where the build mounts a host CA bundle (a TLS-inspecting proxy); only a
# warning when the file is absent.
RUN NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
        npm ci --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier \
            --loglevel=error \
    && rm -rf /root/.npm \
    && node_modules/.bin/configurable-http-proxy --version

FROM ${BASE}
ARG VERSION=5.3.0
LABEL org.opencontainers.image.title="configurable-http-proxy" \
      org.opencontainers.image.description="configurable-http-proxy for the aispike-hub chart" \
      org.opencontainers.image.source="https://github.com/aispike/aispike-hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
COPY --from=build /opt/chp /opt/chp
ENV PATH=/opt/chp/node_modules/.bin:$PATH NODE_ENV=production
# Any non-root uid works (node needs no passwd entry); the chart runs it as 1000.
USER 1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["node", "-e", "require('http').get('http://127.0.0.1:8000/_chp_healthz', r => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["configurable-http-proxy"]
