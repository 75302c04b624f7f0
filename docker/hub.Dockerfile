# Image of the hub and of the AISpike service (chart values hub.image and aispike.service.image):
# JupyterHub with AISpikeSpawner, and `aispike-hub service`. Built from a wheel of this project
# (docs/container-images.md); scripts/build-images does all of it here:
#   python -m pip wheel --no-deps -w dist . && cp constraints.txt dist/
#   docker build -f docker/hub.Dockerfile -t REGISTRY/aispike-hub:TAG dist/
# BASE: any Debian-like image with python3 (>= 3.11) and its venv module; scripts/build-images
# passes a Debian base it makes itself with mmdebstrap (no registry needed). BUILD_BASE: where the
# venv's shared objects are stripped (binutils, installed there when missing).
ARG BASE=python:3.12-slim
ARG BUILD_BASE=debian:bookworm-slim

FROM ${BASE} AS venv
COPY constraints.txt aispike_hub-*.whl /wheels/
# The hub (KubeSpawner side) and service extras at the exact versions CI tests (constraints.txt).
# Not needed at run time, so not kept: pip, the test suites of numpy and scipy, the asyncio
# client bundled in `kubernetes` (kubernetes.aio, 68 MB: nothing imports it; KubeSpawner uses
# kubernetes_asyncio), numpy.distutils, type stubs (*.pyi), and every scipy subpackage outside
# what `scipy.optimize.linprog` loads (SCIPY_KEEP: stats, signal, io, interpolate, ... 35 MB).
# numpy and scipy stay: the placement core (hub and service) needs numpy, the default `aispike`
# policy scipy's LP solver (docs/container-images.md has the sizes).
ARG SCIPY_KEEP="__pycache__ _lib constants fft linalg optimize sparse spatial special"
# The two Kubernetes clients' generated API and model classes (2 x ~900 modules, 50 MB of
# docstring-heavy source beside its bytecode) are kept as bytecode only: they import as before;
# a traceback through them shows file and line, not the line's text. Their hand-written parts
# (REST client, config, watch) keep their source.
ARG K8S_GENERATED="kubernetes/client/api kubernetes/client/models kubernetes_asyncio/client/api kubernetes_asyncio/client/models"
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /wheels/constraints.txt \
        "$(ls /wheels/aispike_hub-*.whl)[hub,service]" \
    && /opt/venv/bin/python -m pip uninstall -q -y pip setuptools \
    && cd /opt/venv/lib/python3*/site-packages \
    && find numpy scipy -depth -type d -name tests -exec rm -rf {} + \
    && rm -rf kubernetes/aio numpy/distutils \
    && find . -name '*.pyi' -delete \
    && for d in scipy/*/; do \
        case " $SCIPY_KEEP " in *" $(basename "$d") "*) ;; *) rm -rf "$d" ;; esac; done \
    && for d in $K8S_GENERATED; do \
        /opt/venv/bin/python -m compileall -q -b -j0 "$d" >/dev/null \
        && find "$d" -name '*.py' -delete \
        && find "$d" -depth -name __pycache__ -type d -exec rm -rf {} +; done \
    && /opt/venv/bin/aispike-hub --help >/dev/null

# Extension modules without their debugging symbols (31 MB less; what the loader needs stays).
# Not the libraries auditwheel vendored into `*.libs/` (OpenBLAS, libpq, ...): patchelf rewrote
# their headers, and strip then leaves them unloadable ("ELF load command ... not page-aligned").
FROM ${BUILD_BASE} AS strip
COPY --from=venv /opt/venv /opt/venv
RUN (command -v strip >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends binutils; }) \
    && find /opt/venv -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
        -exec strip --strip-unneeded {} +

FROM ${BASE}
ARG VERSION=0.1.0.dev0
LABEL org.opencontainers.image.title="aispike-hub" \
      org.opencontainers.image.description="AISpike Hub: JupyterHub with AISpikeSpawner, and the AISpike service" \
      org.opencontainers.image.source="https://github.com/aispike/aispike-hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
# tini reaps the processes JupyterHub starts; the local base has it already.
RUN (command -v tini >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends tini \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; }) \
    && useradd --uid 1000 --user-group --home-dir /srv/jupyterhub --create-home hub \
    && mkdir -p /var/lib/aispike /usr/local/etc/jupyterhub \
    && chown 1000:1000 /var/lib/aispike
COPY --from=strip /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
# What was trimmed is not needed and what was stripped still loads: every shared object of the
# venv is dlopen()ed, the hub's and the service's modules import, and the slice LP solves
# (scipy's HiGHS, numpy's BLAS).
RUN python3 -c "import ctypes, pathlib; \
[ctypes.CDLL(str(f)) for f in pathlib.Path('/opt/venv').rglob('*.so*') if f.is_file()]; \
import aispike_hub.service.app, aispike_hub.spawner.kube; \
from aispike_hub.placement.slice_values import lp_prices; \
got = lp_prices([1, 2, 3], [4.0, 2.0, 1.0], 8); \
assert max(abs(a - b) for a, b in zip(got, [0.125, 0.25, 0.375])) < 1e-9, got"
# uid 1000, as the chart's securityContext runs it; /srv/jupyterhub holds the hub's sqlite file,
# /var/lib/aispike the service's.
USER 1000
WORKDIR /srv/jupyterhub
EXPOSE 8081 10101
# The hub answers /hub/health on 8081, the service /services/aispike/api/health on 10101: healthy
# when the one this container runs answers. (Kubernetes ignores HEALTHCHECK: the chart has probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request as u\nfor url in ('http://127.0.0.1:8081/hub/health', 'http://127.0.0.1:10101/services/aispike/api/health'):\n    try:\n        u.urlopen(url, timeout=4); sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["tini", "--"]
CMD ["jupyterhub", "--config=/usr/local/etc/jupyterhub/jupyterhub_config.py"]
