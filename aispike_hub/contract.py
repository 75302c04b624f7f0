"""Every name AISpike Hub writes to or reads from Kubernetes and the notebook's environment.

Labels, annotations, the DRA driver and DeviceClass, extended resource names, quota resource
names, the CDI device kind and environment variables are a contract with things outside this
package (the kubelet, the container runtime, device plugins, the Helm chart, notebook images,
``kubectl`` users, older hub replicas).  They are declared once here so a rename is one edit and
a reader sees the whole contract in one place.  Pure constants; no I/O, no imports.

Where a module of its own declared a name before (e.g. ``aispike_hub.kube.slices.DRIVER``), it
re-exports the constant from here.  One exception: :mod:`aispike_hub.agent.kernel_hook` runs in
notebook images without this package and spells its three variables out; a unit test keeps them
equal to these.
"""

from __future__ import annotations

# --- DRA: driver, DeviceClass, API --------------------------------------------------------------

DRIVER = "gpu.aispike.io"
"""Our DRA driver name; also the attribute domain: ``device.attributes["gpu.aispike.io"].uuid``."""
DEVICE_CLASS = "gpu.aispike.io"
"""DeviceClass that every AISpike ResourceClaim names in ``deviceClassName``."""
RESOURCE_GROUP = "resource.k8s.io"
"""API group of DRA objects (ResourceSlice, ResourceClaim, DeviceClass)."""
RESOURCE_VERSION = "v1"
RESOURCE_API_VERSION = f"{RESOURCE_GROUP}/{RESOURCE_VERSION}"
"""DRA API group version (GA since Kubernetes 1.34; consumable capacity fields since 1.36)."""
MEMORY_CAPACITY = "memory"
"""Name of the consumable capacity that GPU-memory slices are requested and accounted in."""
NVIDIA_DRIVER = "gpu.nvidia.com"
"""NVIDIA's DRA driver (k8s-dra-driver-gpu): its claims on the same GPUs count as taken."""
NVIDIA_DEVICE_CLASS = "gpu.nvidia.com"
"""NVIDIA's DeviceClass of whole GPUs (``mig.nvidia.com`` selects its MIG devices)."""
PCIE_ROOT_ATTRIBUTE = "resource.kubernetes.io/pcieRoot"
"""Standard DRA device attribute: the PCIe root complex of a device (NVIDIA's driver sets it)."""
PCI_BUS_ID_ATTRIBUTE = "resource.kubernetes.io/pciBusID"
"""Standard DRA device attribute: the device's PCI bus ID (NVIDIA's driver sets it)."""
CDI_KIND = "aispike.io/gpu"
"""CDI ``vendor/class`` of our devices: a claim's device is ``aispike.io/gpu=<claim uid>``."""

# --- labels -------------------------------------------------------------------------------------

GPU_MODEL_LABEL = "aispike.io/gpu-model"
"""Node label naming the node's GPU model (``mixed`` when a node has more than one model)."""
SERVER_LABEL = "aispike.io/server"
"""Label on our claims (and the pods that use them): the server's pod name (hashed if too long)."""
HUB_ID_LABEL = "aispike.io/hub"
"""Label on a hub's claims: its hub id (absent for the default hub; see kube/identity.py)."""
BACKEND_LABEL = "aispike.io/backend"
"""Label and annotation on notebook pods: the GPU backend that started them."""
INVENTORY_LABEL = "aispike.io/inventory"
"""Node label of the local spawner's machine: where the GPUs come from (``nvml``/``simulated``)."""
POOL_LABEL = "aispike.io/pool"
"""Node label an admin may set to group nodes into pools (the admin panel's default first)."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "aispike-hub"
"""Value of ``app.kubernetes.io/managed-by`` on the claims and quotas the hub creates."""
MANAGED_BY_AGENT = "aispike-hub-agent"
"""Value of ``app.kubernetes.io/managed-by`` on the ResourceSlices the node agent publishes."""

# --- annotations --------------------------------------------------------------------------------

DATASETS_ANNOTATION = "aispike.io/datasets"
"""Node annotation: JSON list of the datasets the node's cache holds (name, bytes, last use)."""
CONTENT_HASH_ANNOTATION = "aispike.io/content-hash"
"""On the agent's ResourceSlice: hash of its content, so an unchanged slice is not rewritten."""
PLACEMENT_ANNOTATION = "aispike.io/placement"
"""On our claims: the placement decision (node, GPUs with uuid and MiB, CPU, RAM, attempt)."""
REQUEST_ANNOTATION = "aispike.io/request"
"""On our claims and pods: the server's :class:`SliceRequest` as JSON."""
HUB_SERVER_ANNOTATION = "aispike.io/hub-server"
"""On our claims and notebook pods: ``[<hub id>:]<hub user>/<server name>`` (the service's
reservation key, after the hub id; no hub id: the default hub; see kube/identity.py)."""
HUB_USER_ANNOTATION = "aispike.io/hub-user"
"""On the ResourceQuota of a user namespace: the hub user it mirrors."""
OPTIONS_ANNOTATION = "aispike.io/options"
"""On notebook pods: the validated ``user_options`` as JSON."""
BACKEND_ANNOTATION = BACKEND_LABEL
TIER_ANNOTATION = "aispike.io/tier"
"""On notebook pods: the priority tier admission gave the server."""
NOTE_ANNOTATION = "aispike.io/note"
"""On notebook pods: what the backend rounded (e.g. a whole GPU for a slice)."""
CDI_CLAIM_ANNOTATION = "aispike.io/claim"
"""On a CDI spec: ``<namespace>/<name>`` of the claim it was written for."""

# --- extended resources (device-plugin backends) and quota resource names ----------------------

NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
"""Extended resource of whole GPUs (NVIDIA's device plugin; also HAMi's GPU count)."""
HAMI_MEMORY_RESOURCE = "nvidia.com/gpumem"
"""HAMi's GPU-memory extended resource (MiB)."""
HAMI_CORES_RESOURCE = "nvidia.com/gpucores"
"""HAMi's compute share per GPU (percent)."""
HAMI_ALLOCATED_ANNOTATION = "hami.io/vgpu-devices-allocated"
"""HAMi's pod annotation naming the GPUs it gave the pod: ``<uuid>,<type>,<MiB>,<cores>`` per
device, ``:`` between devices, ``;`` between containers (read, never written)."""
GPUSHARE_MEMORY_RESOURCE = "aliyun.com/gpu-mem"
"""Aliyun gpushare's GPU-memory extended resource (GiB, or MiB with ``--memory-unit=MiB``)."""
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
"""MIG instances as extended resources: ``nvidia.com/mig-<profile>`` (mixed strategy)."""
GFD_MODEL_LABEL = "nvidia.com/gpu.product"
"""GPU Feature Discovery's node label naming the GPU model (read, never written)."""
GPU_MODEL_LABELS = (GPU_MODEL_LABEL, GFD_MODEL_LABEL)
"""Node labels naming a node's GPU model, in order of precedence: ours (the node agent), else GPU
Feature Discovery's; a node with neither is named by its DRA devices' attributes
(:data:`DRA_MODEL_ATTRIBUTES`)."""
DRA_MODEL_ATTRIBUTES = ("model", "productName")
"""ResourceSlice device attributes naming the GPU model: ours (``gpu.aispike.io/model``), else
NVIDIA's DRA driver's (``gpu.nvidia.com/productName``) (read)."""
NODE_NAME_FIELD = "metadata.name"
"""The node field a node-affinity ``matchFields`` term selects by (one value per term)."""
GFD_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GPU Feature Discovery's node label with the GPU memory in MiB (read, never written)."""
DEVICES_QUOTA = f"{DEVICE_CLASS}.deviceclass.{RESOURCE_GROUP}/devices"
"""ResourceQuota resource counting devices of our DeviceClass (a slice is one device)."""
CLAIMS_QUOTA = f"count/resourceclaims.{RESOURCE_GROUP}"
"""ResourceQuota resource counting ResourceClaims."""

# --- environment: the slice a container gets (isolation; written by the DRA plugin's CDI spec) --

ENV_NVIDIA_VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
ENV_CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
ENV_GPU_MEMORY_LIMIT = "AISPIKE_GPU_MEMORY_LIMIT"
"""MiB of the first GPU's slice."""
ENV_GPU_MEMORY_LIMITS = "AISPIKE_GPU_MEMORY_LIMITS"
"""MiB per visible GPU, comma-separated, in ``NVIDIA_VISIBLE_DEVICES`` order."""
ENV_FRAMEWORK_LIMITS = "AISPIKE_FRAMEWORK_LIMITS"
"""Frameworks the kernel hook limits, comma-separated (``torch,tensorflow``)."""
ENV_HAMI_LIMIT_PREFIX = "CUDA_DEVICE_MEMORY_LIMIT_"
"""HAMi-core's per-device limit: ``CUDA_DEVICE_MEMORY_LIMIT_<i>=<MiB>m``."""
ENV_XLA_MEM_FRACTION = "XLA_PYTHON_CLIENT_MEM_FRACTION"
"""JAX's preallocation fraction."""
ENV_MPS_THREAD_PERCENTAGE = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
"""CUDA MPS: percent of the GPU's SMs a client may use (enforced only under an MPS daemon)."""
ENV_COMPUTE_PERCENT = "AISPIKE_GPU_COMPUTE_PERCENT"
"""The slice's compute share in percent of the GPU, as the hub granted it (informational)."""

# --- environment: what the spawners tell the notebook about its slice --------------------------

ENV_BACKEND = "AISPIKE_BACKEND"
ENV_GPU_COUNT = "AISPIKE_GPU_COUNT"
ENV_GPU_MODEL = "AISPIKE_GPU_MODEL"
ENV_GPU_MEMORY_MIB = "AISPIKE_GPU_MEMORY_MIB"
ENV_GPU_INDICES = "AISPIKE_GPU_INDICES"
ENV_GPU_MODELS = "AISPIKE_GPU_MODELS"
ENV_DATASETS = "AISPIKE_DATASETS"
ENV_SIMULATED_GPUS = "AISPIKE_SIMULATED_GPUS"

# --- environment: configuration defaults of the processes --------------------------------------

ENV_SERVICE_URL = "AISPIKE_SERVICE_URL"
ENV_SERVICE_TOKEN = "AISPIKE_SERVICE_TOKEN"
ENV_AGENT_URL = "AISPIKE_AGENT_URL"
ENV_NVML_FIXTURE = "AISPIKE_NVML_FIXTURE"
ENV_NOTICES_TOKEN = "AISPIKE_NOTICES_TOKEN"
ENV_CACHE = "AISPIKE_CACHE"
