# Image of the node agent DaemonSet (chart value aispike.agent.image): NVML through nvidia-ml-py
# (the driver's libnvidia-ml comes from the NVIDIA container runtime), the DRA kubelet plugin, CDI.
#   python -m pip wheel --no-deps -w dist . && cp constraints.txt dist/
#   docker build -f docker/agent.Dockerfile -t REGISTRY/aispike-hub-agent:TAG dist/
# (scripts/build-images does it here, on a Debian base of its own: docs/container-images.md)
ARG BASE=python:3.12-slim

FROM ${BASE} AS venv
COPY constraints.txt aispike_hub-*.whl /wheels/
# Exact versions as CI tests them (constraints.txt); kubernetes and pyyaml for the node labels and
# ResourceSlices the agent publishes. Not kept: pip, numpy's and scipy's test suites, and the
# unused asyncio client bundled in `kubernetes` (kubernetes.aio, 68 MB).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /wheels/constraints.txt \
        "$(ls /wheels/aispike_hub-*.whl)[agent]" kubernetes pyyaml \
    && /opt/venv/bin/python -m pip uninstall -q -y pip setuptools \
    && find /opt/venv/lib/python3*/site-packages/numpy /opt/venv/lib/python3*/site-packages/scipy \
        -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
    && /opt/venv/bin/aispike-hub agent --help >/dev/null

FROM ${BASE}
ARG VERSION=0.1.0.dev0
LABEL org.opencontainers.image.title="aispike-hub-agent" \
      org.opencontainers.image.description="AISpike Hub node agent: NVML metrics, DRA kubelet plugin, CDI" \
      org.opencontainers.image.source="https://github.com/aispike/aispike-hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
RUN (command -v tini >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends tini \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; }) \
    && useradd --uid 1000 --user-group --no-create-home --home-dir /nonexistent aispike
COPY --from=venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# Non-root by default. The chart runs it as root with DAC_READ_SEARCH and SYS_PTRACE only
# (hostPID, /proc of other containers, the kubelet's plugin sockets).
USER 1000
EXPOSE 9402
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9402/metrics', timeout=4)"]
ENTRYPOINT ["tini", "--", "aispike-hub", "agent"]
CMD ["--publish"]
