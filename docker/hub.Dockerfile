# Image of the hub and the AISpike service (chart values hub.image, aispike.service.image).
# Built from this repository's package:  docker build -f docker/hub.Dockerfile -t IMAGE .
# The lab extension must be built first (labextension/: npm ci && npm run build), as for a wheel.
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
COPY constraints.txt /wheels/
# The hub (KubeSpawner side) and service extras, at the exact versions CI tests (constraints.txt).
RUN pip install --no-cache-dir -c /wheels/constraints.txt \
        "$(ls /wheels/aispike_hub-*.whl)[hub,service]" \
    && rm -rf /wheels
# uid 1000, as the chart's securityContext runs it; /srv/jupyterhub holds the sqlite file.
RUN useradd --uid 1000 --home-dir /srv/jupyterhub --create-home hub \
    && mkdir -p /var/lib/aispike && chown 1000:1000 /var/lib/aispike
USER 1000
WORKDIR /srv/jupyterhub
EXPOSE 8081 10101
ENTRYPOINT ["tini", "--"]
CMD ["jupyterhub", "--config=/usr/local/etc/jupyterhub/jupyterhub_config.py"]
