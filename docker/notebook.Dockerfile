# Notebook image (an entry of the chart's singleuser.images, or the base of your own): JupyterLab,
# jupyterhub-singleuser, AISpike Hub's lab extension and server extension (the GPU slice and quota
# in the status bar, docs/lab-extension.md), and the kernel hook that keeps PyTorch/TensorFlow
# inside the slice the node agent's CDI spec describes in the environment (docs/isolation.md).
#   python -m pip wheel --no-deps -w dist . && cp constraints.txt dist/
#   docker build -f docker/notebook.Dockerfile -t REGISTRY/aispike-hub-notebook:TAG dist/
# Your own image: FROM it, then `pip install` (as jovyan, into /opt/venv) what your users need.
ARG BASE=python:3.12-slim

FROM ${BASE} AS venv
COPY constraints.txt aispike_hub-*.whl /wheels/
# [lab]: the server extension and the prebuilt lab extension (shared-data of the wheel, so it
# lands in /opt/venv/share/jupyter and /opt/venv/etc/jupyter); versions from constraints.txt.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /wheels/constraints.txt \
        "$(ls /wheels/aispike_hub-*.whl)[lab]" jupyterlab jupyterhub \
    && find /opt/venv/lib/python3*/site-packages/numpy /opt/venv/lib/python3*/site-packages/scipy \
        -depth -type d -name tests -exec rm -rf {} + \
    && mkdir -p /opt/venv/etc/ipython \
    && printf '%s\n' \
        '# AISpike Hub: load the kernel hook in every IPython kernel (docs/isolation.md).' \
        '# It reads the slice from the environment (AISPIKE_GPU_MEMORY_LIMITS, ...) and does' \
        '# nothing without one. The agent may also mount it at /usr/local/etc/ipython (idempotent).' \
        'c.InteractiveShellApp.extensions.append("aispike_hub.agent.kernel_hook")' \
        > /opt/venv/etc/ipython/ipython_kernel_config.py \
    && /opt/venv/bin/jupyter labextension list 2>&1 | grep -q aispike-hub-lab \
    && /opt/venv/bin/jupyter server extension list 2>&1 | grep -q 'aispike_hub.serverext.*enabled'

FROM ${BASE}
ARG VERSION=0.1.0.dev0
LABEL org.opencontainers.image.title="aispike-hub-notebook" \
      org.opencontainers.image.description="JupyterLab with the AISpike Hub lab extension, server extension and kernel hook" \
      org.opencontainers.image.source="https://github.com/aispike/aispike-hub" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"
RUN (command -v tini >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends tini \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; }) \
    && useradd --uid 1000 --gid 100 --home-dir /home/jovyan --create-home --shell /bin/bash jovyan \
    && printf '%s\n' '#!/bin/sh' \
        '# Spawned by JupyterHub (it sets JUPYTERHUB_API_TOKEN): the single-user server, which' \
        '# serves under the hub'"'"'s prefix and logs in through the hub; run alone: JupyterLab.' \
        'if [ -n "${JUPYTERHUB_API_TOKEN:-}" ]; then exec jupyterhub-singleuser "$@"; fi' \
        'exec jupyter lab --ip=0.0.0.0 --port=8888 --no-browser "$@"' \
        > /usr/local/bin/aispike-start-notebook \
    && chmod 755 /usr/local/bin/aispike-start-notebook
# jovyan owns the venv: users pip install into it, as in the Jupyter Docker Stacks
COPY --from=venv --chown=1000:100 /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 SHELL=/bin/bash
USER 1000
WORKDIR /home/jovyan
EXPOSE 8888
# Healthy when the running server answers its /api (under the hub its base URL is /user/<name>/).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request as u\nfrom jupyter_server.serverapp import list_running_servers as ls\nfor s in ls():\n    u.urlopen(s['url'] + 'api', timeout=4); sys.exit(0)\nsys.exit(1)"]
# KubeSpawner passes `jupyterhub-singleuser` as the container's args; alone, JupyterLab starts.
ENTRYPOINT ["tini", "-g", "--"]
# With a hub (KubeSpawner's cmd unset: this CMD), jupyterhub-singleuser; alone, JupyterLab.
CMD ["aispike-start-notebook"]
