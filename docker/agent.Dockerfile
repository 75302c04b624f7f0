# Image of the node agent DaemonSet (chart value aispike.agent.image): NVML through nvidia-ml-py
# (the driver's libnvidia-ml comes from the NVIDIA container runtime), DRA kubelet plugin, CDI.
#   docker build -f docker/agent.Dockerfile -t IMAGE .
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
COPY --from=wheel /wheels /wheels
COPY constraints.txt /wheels/
# Exact versions as CI tests them (constraints.txt).
RUN pip install --no-cache-dir -c /wheels/constraints.txt \
        "$(ls /wheels/aispike_hub-*.whl)[agent]" kubernetes pyyaml \
    && rm -rf /wheels
# Runs as root in the chart (hostPID, /proc of other containers, kubelet plugin sockets).
EXPOSE 9402
ENTRYPOINT ["aispike-hub", "agent"]
CMD ["--publish"]
