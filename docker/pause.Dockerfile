# The pre-puller DaemonSets' placeholder container (chart value prePuller.pauseImage,
# registry.k8s.io/pause:3.10 by default): a static program that waits for SIGTERM and reaps
# children, in an image of its own (about 1 MB, no shell, uid 65535). Where registry.k8s.io is
# reachable its image is used as is; here (no registry) scripts/build-images builds this one
# under that name, as kind and minikube load images they cannot pull.
#   docker build -f docker/pause.Dockerfile -t REGISTRY/pause:3.10 docker/pause
ARG BUILD_BASE=debian:bookworm-slim

FROM ${BUILD_BASE} AS build
COPY pause.c /src/pause.c
RUN (command -v gcc >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev; }) \
    && gcc -static -Os -s -Wall -Werror -o /pause /src/pause.c

FROM scratch
ARG VERSION=3.10
LABEL org.opencontainers.image.title="pause" \
      org.opencontainers.image.description="AISpike Hub's pause container (pre-puller pods)" \
      org.opencontainers.image.source="https://github.com/aispike/aispike-hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
COPY --from=build /pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
