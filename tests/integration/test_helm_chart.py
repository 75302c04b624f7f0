"""The aispike-hub chart on the real test control plane: `helm install --wait` with kwok GPU nodes
brings every Deployment to ready and every DaemonSet pod onto the nodes it belongs on (agent: GPU
nodes only; pre-pullers: per image, GPU images only on their GPU models); `helm upgrade` with a
changed quota rolls the service (only: the hub and the proxy keep their pods); `helm uninstall`
leaves no object of the release behind, cluster-scoped ones included, and no process.

kwok runs no containers, so the test runs every pod of the release itself, the way a kubelet
would, from the images scripts/build-images built (tests/integration/podrunner.py in container
mode, tests/integration/containers.py: podman + runc, the pod's volumes, a real service-account
token, its securityContext, an /etc/hosts standing in for cluster DNS): the hub, the proxy and the
AISpike service, the agent DaemonSet (on a recorded NVML machine, mounted from a ConfigMap through
``aispike.agent.extraVolumes``), the pre-puller DaemonSets (init container from the notebook
image, then the pause image) and the notebook pods the installed hub spawns, from the project's
notebook image.  Image names are the chart's own defaults; the test fails if any pod of the
release was started in another way.  A user then logs in through the proxy pod, starts a notebook
with an 8 GiB GPU slice through the hub's REST API, and the test checks what the installed hub and
service did with the chart's own ServiceAccounts and RBAC: the pinned ResourceClaim allocated by
kube-scheduler with ``consumedCapacity: 8Gi``, the pod Running on a GPU node, the notebook reached
through the proxy, JupyterLab's status bar showing the slice in Chromium, the user's quota read
from the service with the notebook's own token, the hub's token and read-only root, and the claim
gone when the server stops.  That part needs root, podman, runc and the images (scripts/test
builds them; CI runs as root): without them the rest runs and the real-process part is skipped
with a warning, except with CI=true, where it fails."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.rest import ApiException

from aispike_hub.kube.claims import HUB_SERVER_ANNOTATION
from aispike_hub.kube.slices import DEVICE_CLASS, GPU_MODEL_LABEL, device_class
from tests.images.test_images import IMAGES

from .conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IN_CI,
    REPO,
    SESSION_NAMESPACES,
    TEST_GROUP_LABEL,
    GpuNodes,
    TestCluster,
    browser_or_skip,
    unavailable,
    wait_until,
)
from .containers import ContainerMode, containers_unavailable
from .leftovers import claim_of
from .podrunner import Kubelet, PodRunner, kubelet_unavailable

CHART = REPO / "helm" / "aispike-hub"
A100 = "NVIDIA A100-SXM4-80GB"
NVML_RECORDING = REPO / "tests" / "fixtures" / "nvml" / "h200-1gpu.json"
RECORDING_MAP = "nvml-recording"
"""The ConfigMap holding the recorded NVML machine the agents read (see `agent_recording`)."""
PAUSE_IMAGE = IMAGES["pause"]  # the chart's prePuller.pauseImage

# Cluster-scoped kinds the chart creates, with how to list them (all carry the release label).
CLUSTER_KINDS = {
    "clusterroles": "rbac.authorization.k8s.io",
    "clusterrolebindings": "rbac.authorization.k8s.io",
    "priorityclasses": "scheduling.k8s.io",
    "deviceclasses": "resource.k8s.io",
}
NAMESPACED_KINDS = [
    "deployments", "daemonsets", "replicasets", "pods", "services", "configmaps", "secrets",
    "serviceaccounts", "roles", "rolebindings", "networkpolicies", "poddisruptionbudgets",
    "persistentvolumeclaims",
]


ADMIN = "helm-admin"


def values(release: str, quota_gib: int, group: str) -> dict[str, Any]:
    """Values for kwok: no PVC for the hub's database (nothing provisions volumes here; the
    users' home PVCs get pre-bound volumes, see `home_volume`), no LoadBalancer (`--wait` waits
    for an external IP no controller gives here), tiers with per-release PriorityClass names, and
    the agent and pre-pullers kept to this test's nodes (the shared cluster holds other tests'
    nodes, hundreds after the burst and panel tests, whose DaemonSet pods kwok would have to
    start). Home storage, culling and the admin panel's roles stay the chart's defaults, and so
    do the images of the hub, proxy, service, agent and pre-pullers; the notebook images are the
    project's (an admin's choice: the chart's defaults are Jupyter's stacks, not built here).

    The agents read a recorded NVML machine (one H200) mounted from a ConfigMap; two defaults are
    off, with the reason: ``publish`` (the test cluster's ResourceSlices stand for the kwok nodes'
    GPUs; an agent on a recording would replace them with the recorded H200) and the DRA kubelet
    plugin (no kubelet registers it)."""
    return {
        "prePuller": {"nodeSelector": {TEST_GROUP_LABEL: group}},
        # The dummy authenticator lets anyone in with any password (a test hub, nothing else).
        # working_dir: an image's WORKDIR (the pod runner has no image), where the server's
        # files live, on the home volume as in the Jupyter docker stacks.
        "hub": {"db": {"type": "sqlite-memory"},
                "config": {"JupyterHub": {"authenticator_class": "dummy"},
                           "Authenticator": {"allow_all": True, "admin_users": [ADMIN]},
                           "KubeSpawner": {"working_dir": "/home/jovyan"}}},
        "proxy": {"service": {"type": "NodePort"}},
        "singleuser": {
            "images": [
                {"name": "pytorch", "image": IMAGES["notebook"], "gpu": True,
                 "gpuModels": [A100]},
                {"name": "minimal", "image": IMAGES["notebook"]},
            ],
        },
        "aispike": {
            "agent": {
                "gpuNodeSelectorTerms": [{"matchExpressions": [
                    {"key": GPU_MODEL_LABEL, "operator": "Exists"},
                    {"key": TEST_GROUP_LABEL, "operator": "In", "values": [group]},
                ]}],
                "publish": False, "draPlugin": "false",
                "config": {"AgentApp": {
                    "nvml_fixture": f"/etc/aispike-nvml/{NVML_RECORDING.name}"}},
                "extraVolumes": [{"name": "nvml", "configMap": {"name": RECORDING_MAP}}],
                "extraVolumeMounts": [{"name": "nvml", "mountPath": "/etc/aispike-nvml",
                                       "readOnly": True}],
            },
            "service": {
                "persistence": {"enabled": False},
                "policy": {
                    "defaults": {"quota": {"servers": 2, "gpu_memory": f"{quota_gib}Gi"}},
                    "tiers": [
                        {"name": "low", "priority": 0, "preempts": False,
                         "priority_class": f"{release}-low"},
                        {"name": "normal", "priority": 100, "priority_class": f"{release}-normal"},
                    ],
                    "default_tier": "normal",
                },
            },
        },
    }


def agent_recording(cluster: TestCluster, namespace: str) -> None:
    """The recorded NVML machine as a ConfigMap, as an admin of simulated nodes would ship it."""
    cluster.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": RECORDING_MAP},
        "data": {NVML_RECORDING.name: NVML_RECORDING.read_text()}})


def release_objects(cluster: TestCluster, namespace: str, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    found = []
    for kind in NAMESPACED_KINDS:
        out = cluster.kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "name").stdout
        found += out.split()
    for kind, group in CLUSTER_KINDS.items():
        out = cluster.kubectl("get", f"{kind}.{group}", "-l", selector, "-o", "name").stdout
        found += out.split()
    return found


def adopt_device_class(cluster: TestCluster, namespace: str, release: str) -> None:
    """The test cluster made gpu.aispike.io at start; hand it to the release as Helm adopts."""
    patch = {"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": release,
                        "meta.helm.sh/release-namespace": namespace}}}
    try:
        cluster.custom.patch_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", DEVICE_CLASS, patch)
    except ApiException as e:
        if e.status != 404:  # absent: the release simply creates it
            raise


def restore_device_class(cluster: TestCluster) -> None:
    try:
        cluster.custom.create_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", device_class())
    except ApiException as e:
        if e.status != 409:
            raise


def pods_by_node(cluster: TestCluster, namespace: str, selector: str) -> dict[str, str]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
    return {p.metadata.name: p.spec.node_name for p in pods}


# --- the chart's processes, run for real --------------------------------------------------------

NOTEBOOK_LABEL = ("component", "singleuser-server")
CHART_IMAGES = (IMAGES["hub"], IMAGES["proxy"], IMAGES["agent"], IMAGES["notebook"], PAUSE_IMAGE)


def chart_pods(release: str) -> Callable[[Any], bool]:
    """The pods the runner runs: every pod of the release (hub, proxy, service, agents,
    pre-pullers) and the notebook pods its hub spawns."""

    def accept(pod: Any) -> bool:
        labels = pod.metadata.labels or {}
        if labels.get(NOTEBOOK_LABEL[0]) == NOTEBOOK_LABEL[1]:
            return True
        return labels.get("app.kubernetes.io/instance") == release

    return accept


@pytest.fixture
def image_runner(cluster: TestCluster, namespace: str) -> Iterator[PodRunner | None]:
    """A pod runner in container mode for this test's namespace: each pod from its image
    (None where it cannot run: no root, podman, runc or images)."""
    reason = kubelet_unavailable() or containers_unavailable(CHART_IMAGES)
    if reason:
        if IN_CI:
            unavailable(reason)  # fails: CI must run the chart's pods from their images
        warnings.warn(f"the chart's pods are not run: {reason}", stacklevel=1)
        yield None
        return
    # This namespace's notebook pods are this runner's, not the session's notebook runner's.
    SESSION_NAMESPACES.discard(namespace)
    runner = PodRunner(
        cluster.api, label_selector="", watch_namespace=namespace,
        namespaces={namespace}.__contains__, accept=None,  # the test sets it: release known
        kubelet=Kubelet.for_api(cluster.api), containers=ContainerMode(),
    )
    yield runner
    runner.stop()
    left = [(p.name, p.process.pid) for p in runner.alive()]
    assert not left, f"the pod runner left processes behind: {left}"


def assert_all_from_images(cluster: TestCluster, runner: PodRunner, namespace: str,
                           release: str) -> None:
    """Every pod of the release (and every notebook pod) this runner saw was started from the
    image its spec names, by container mode: none in another way, none left out."""
    mode = runner.containers
    assert isinstance(mode, ContainerMode), "the pod runner is not in container mode"
    accept = chart_pods(release)
    pods = [p for p in cluster.core.list_namespaced_pod(namespace).items if accept(p)]
    assert pods, "no pod of the release"
    for pod in pods:
        key = f"{namespace}/{pod.metadata.name}"
        assert mode.started_from_image.get(key) == pod.spec.containers[0].image, (
            key, pod.spec.containers[0].image, mode.started_from_image, runner.errors)
        inits = [c.image for c in pod.spec.init_containers or []]
        assert mode.init_containers_run.get(key, []) == inits, (key, inits)


class HubUser:
    """A browser-like session of one user on the installed hub, through the proxy pod."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.session = requests.Session()

    @property
    def xsrf(self) -> dict[str, str]:
        return {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}

    def login(self) -> None:
        r = self.session.get(f"{self.url}hub/login", timeout=30)
        assert r.status_code == 200, r.text[:500]
        r = self.session.post(f"{self.url}hub/login", timeout=30, allow_redirects=False,
                              data={"username": self.name, "password": "any",
                                    "_xsrf": self.xsrf["X-XSRFToken"]})
        assert r.status_code == 302, (r.status_code, r.text[:500])

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}hub/api{path}", headers=self.xsrf,
                                    timeout=kw.pop("timeout", 60), **kw)

    def server(self) -> dict[str, Any]:
        r = self.api("GET", f"/users/{self.name}")
        assert r.status_code == 200, r.text[:500]
        return dict((r.json().get("servers") or {}).get("") or {})


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def only_pod(cluster: TestCluster, namespace: str, selector: str) -> Any:
    pods = [p for p in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]
    return pods[0] if len(pods) == 1 else None


def in_container(pid: int, path: str) -> Path:
    """``path`` as the container of process ``pid`` sees it (its root's absolute symlinks,
    such as /var/run, resolved as on this machine, whose file system the container's mirrors)."""
    return Path(f"/proc/{pid}/root{os.path.realpath(path)}")


def read_only_root(pid: int) -> bool:
    """Whether the process sees its root file system read-only (readOnlyRootFilesystem)."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            root_options = fields[5].split(",")
    return "ro" in root_options


def proxy_url(cluster: TestCluster, runner: PodRunner, namespace: str, release: str) -> str:
    base = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=proxy"
    pod = wait_until(lambda: only_pod(cluster, namespace, base), 60, "one proxy pod")
    running = runner.wait_running(namespace, pod.metadata.name, 60)
    return f"http://{running.ip}:8000/"


def home_volume(cluster: TestCluster, namespace: str, claim: str) -> str:
    """A PersistentVolume pre-bound to a user's home PVC, as a provisioner would make it (the
    test cluster has none): kube-controller-manager binds the claim KubeSpawner creates."""
    name = f"{namespace}-{claim}"[:63]
    cluster.core.create_persistent_volume({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": f"/tmp/aispike-test-pv/{name}"},
                 "claimRef": {"namespace": namespace, "name": claim}}})
    return name


def lab_shows_the_slice(url: str, name: str) -> None:
    """She logs in in Chromium and opens JupyterLab: the status bar item names her 8 GiB slice."""
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
            page.goto(f"{url}hub/login?next=%2Fuser%2F{name}%2Flab")
            page.fill("#username_input", name)
            page.fill("#password_input", "any")
            page.click("#login_submit")
            item = page.locator(".aispike-StatusItem")
            item.wait_for(state="visible", timeout=120_000)
            # No NVML in the pod here, so no live use: "GPU · 8 GiB" (with NVML "GPU 0.1 / 8 GiB")
            page.wait_for_function(
                "() => / 8 GiB$/.test(document.querySelector('.aispike-StatusItem')?.textContent"
                " || '')", timeout=60_000)
            title = item.get_attribute("title") or ""
            assert title.startswith("GPU slice: 8 GiB"), (item.text_content(), title)
        finally:
            browser.close()


def agents_and_prepullers_run(cluster: TestCluster, runner: PodRunner, namespace: str,
                              release: str) -> None:
    """The agent pods serve their node's GPUs (the recording mounted from the ConfigMap) on
    their pod IPs; each pre-puller ran the notebook image's init container, then pause."""
    mode = runner.containers
    assert isinstance(mode, ContainerMode)
    base = f"app.kubernetes.io/instance={release}"
    agents = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"{base},app.kubernetes.io/component=agent").items
    assert len(agents) == 2, [a.metadata.name for a in agents]
    for pod in agents:
        running = runner.wait_running(namespace, pod.metadata.name, 120)
        assert mode.started_from_image[f"{namespace}/{pod.metadata.name}"] == IMAGES["agent"]
        port = pod.spec.containers[0].ports[0].container_port

        def usage(ip: str = running.ip, port: int = port) -> str | None:
            try:
                r = requests.get(f"http://{ip}:{port}/usage", timeout=5)
            except requests.RequestException:
                return None
            return r.text if r.status_code == 200 else None

        text = wait_until(usage, 120, f"agent on {pod.spec.node_name} to answer\n"
                          f"{runner.logs()}")
        assert "NVIDIA H200" in text, text[:500]
        pid = mode.pid(running)  # the chart's securityContext: root, read-only root, 2-3 caps
        assert os.stat(f"/proc/{pid}").st_uid == 0 and read_only_root(pid)
    pullers = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"{base},app.kubernetes.io/component=prepuller").items
    assert len(pullers) == 4, [p.metadata.name for p in pullers]  # pytorch: 1 node, minimal: 3
    for pod in pullers:
        running = runner.wait_running(namespace, pod.metadata.name, 120)
        key = f"{namespace}/{pod.metadata.name}"
        assert mode.init_containers_run[key] == [IMAGES["notebook"]], key
        assert mode.started_from_image[key] == PAUSE_IMAGE
        assert running.process.poll() is None, running.log_text()
        assert os.stat(f"/proc/{mode.pid(running)}").st_uid == 65534
    assert_all_from_images(cluster, runner, namespace, release)


def start_a_gpu_notebook(cluster: TestCluster, runner: PodRunner, namespace: str,
                         release: str) -> None:
    """A user logs in through the proxy and starts an 8 GiB slice through the hub's REST API;
    the installed hub and service place it, kube-scheduler allocates the pinned claim."""
    url = proxy_url(cluster, runner, namespace, release)
    wait_until(lambda: answers(f"{url}hub/health"), 120,
               "the installed hub to answer through the proxy pod")
    wait_until(lambda: answers(f"{url}services/aispike/api/health"), 90,
               "the installed AISpike service to answer through the hub's route")

    # Who runs as whom: the chart's securityContext, applied by the runner.
    full = f"{release}-aispike-hub"
    hub = runner.running(namespace, only_pod(
        cluster, namespace, f"app.kubernetes.io/instance={release},"
        "app.kubernetes.io/component=hub").metadata.name)
    assert hub is not None and isinstance(runner.containers, ContainerMode)
    hub_pid = runner.containers.pid(hub)  # the container's first process, not podman
    assert os.stat(f"/proc/{hub_pid}").st_uid == 1000
    assert read_only_root(hub_pid)
    # In-cluster credentials only: the ServiceAccount volume the API server's admission added,
    # with a token the TokenRequest API gave for the hub's ServiceAccount.
    assert "KUBECONFIG" not in hub.env and hub.env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    account = in_container(hub_pid, "/var/run/secrets/kubernetes.io/serviceaccount")
    assert (account / "namespace").read_text() == namespace
    review = client.AuthenticationV1Api(cluster.api).create_token_review(
        {"spec": {"token": (account / "token").read_text()}})
    assert review.status.user.username == (
        f"system:serviceaccount:{namespace}:{full}-hub"), review.status
    proxy = runner.running(namespace, only_pod(
        cluster, namespace, f"app.kubernetes.io/instance={release},"
        "app.kubernetes.io/component=proxy").metadata.name)
    assert proxy is not None and not in_container(  # automountServiceAccountToken: false
        runner.containers.pid(proxy), "/var/run/secrets/kubernetes.io/serviceaccount").exists()

    # A hub admin opens the admin panel (OAuth through the hub): the chart's role gives hub
    # admins the panel's scope, and the service's OAuth client may ask for it.
    admin = HubUser(url, ADMIN)
    admin.login()
    r = admin.session.get(f"{url}services/aispike/admin/", timeout=60)
    assert r.status_code == 200 and r.url.startswith(f"{url}services/aispike/admin"), (
        r.status_code, r.url, r.text[:300])
    # ... and a user who is not an admin does not.
    user = HubUser(url, f"helm-{secrets.token_hex(3)}")
    user.login()
    r = user.session.get(f"{url}services/aispike/admin/", timeout=60)
    assert r.status_code == 403, (r.status_code, r.url)

    # The default install keeps each user's home on a PVC of their own (claim-<user>).
    pv = home_volume(cluster, namespace, f"claim-{user.name}")
    options = {"image": "pytorch", "gpu_gib": 8, "cpu": 1, "memory_gib": 1}
    r = user.api("POST", f"/users/{user.name}/server", json=options)
    assert r.status_code in (201, 202), (r.status_code, r.text[:500])
    server = wait_until(lambda: (s := user.server()).get("ready") and s, 150,
                        f"{user.name}'s notebook ready")
    assert server["user_options"] == options

    # The pod, spawned by the hub with its own ServiceAccount, on a GPU node ...
    pod = only_pod(cluster, namespace, "component=singleuser-server")
    assert pod is not None and pod.status.phase == "Running"
    nodes = {n.metadata.name: n.metadata.labels or {} for n in cluster.core.list_node().items}
    assert GPU_MODEL_LABEL in nodes[pod.spec.node_name], pod.spec.node_name
    # ... with the claim the hub's placer pinned, allocated by kube-scheduler as pinned.
    claim_name = pod.spec.resource_claims[0].resource_claim_name
    claim = claim_of(cluster, namespace, claim_name)
    assert claim is not None
    # Both name the hub (the chart's default hub id is <namespace>.<release>) and the server.
    hub_id = f"{namespace}.{release}".lower()[:63].strip(".-")
    hub_server = f"{hub_id}:{user.name}/"
    assert claim["metadata"]["annotations"][HUB_SERVER_ANNOTATION] == hub_server
    assert pod.metadata.annotations[HUB_SERVER_ANNOTATION] == hub_server
    request = claim["spec"]["devices"]["requests"][0]["exactly"]
    assert request["capacity"]["requests"]["memory"] == "8Gi"
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["consumedCapacity"]["memory"] == "8Gi"
    assert result["pool"] == pod.spec.node_name
    assert claim["metadata"]["ownerReferences"][0]["uid"] == pod.metadata.uid
    notebook = runner.wait_running(namespace, pod.metadata.name, 30)
    assert runner.containers.started_from_image[f"{namespace}/{pod.metadata.name}"] == (
        IMAGES["notebook"])
    assert notebook.env["AISPIKE_GPU_MEMORY_LIMIT"] == "8192"
    # The user reaches their notebook through the proxy (OAuth with the hub, from the notebook
    # pod through the hub's Service name).
    r = user.session.get(f"{url}user/{user.name}/lab", timeout=60)
    assert r.status_code == 200 and r.url.startswith(f"{url}user/{user.name}/lab"), r.url
    xsrf = user.session.cookies.get("_xsrf", path=f"/user/{user.name}/") or ""
    r = user.session.get(f"{url}user/{user.name}/api/status", timeout=60,
                         headers={"X-XSRFToken": xsrf})
    assert r.status_code == 200 and "started" in r.json(), (r.status_code, r.text[:300])
    # JupyterLab of the notebook image, in Chromium: the lab extension's status bar item shows
    # her slice (the image's server extension, reading the environment the slice gave the pod).
    lab_shows_the_slice(url, user.name)
    assert_all_from_images(cluster, runner, namespace, release)
    # She writes a file in her home directory.
    r = user.session.put(f"{url}user/{user.name}/api/contents/kept.txt", timeout=60,
                         headers={"X-XSRFToken": xsrf},
                         json={"type": "file", "format": "text", "content": "still here"})
    assert r.status_code in (200, 201), (r.status_code, r.text[:300])

    # The notebook's server extension reaches the service where the chart says (by Service name,
    # through the notebook pod's /etc/hosts) with the server's own token: its user's quota.
    service_url = urllib.parse.urlsplit(notebook.env["AISPIKE_SERVICE_URL"])
    assert service_url.hostname == f"{full}-service.{namespace}.svc"
    assert notebook.hosts_file is not None
    (ip,) = [line.split()[0] for line in notebook.hosts_file.read_text().splitlines()
             if service_url.hostname in line.split()[1:]]
    r = requests.get(service_url._replace(netloc=f"{ip}:{service_url.port}").geturl()
                     + "api/quota", timeout=30,
                     headers={"Authorization": f"token {notebook.env['JUPYTERHUB_API_TOKEN']}"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    quota = r.json()
    assert quota["user"] == user.name and quota["usage"]["gpu_memory_mib"] == 8192, quota
    assert quota["limits"]["gpu_memory_mib"] == 16384, quota  # the chart's policy values

    # The service admitted it from the cluster it reads with its own ServiceAccount (no nodes
    # file in the chart's config), and tells the user what they use (OAuth with the hub).
    # Read as an admin reads it: `kubectl logs deploy/<release>-hub` (the API server asks the
    # node's kubelet endpoint, which serves the log file the runner keeps for the container).
    hub_log = cluster.kubectl("logs", "-n", namespace, f"deploy/{full}-hub", "-c", "hub").stdout
    said = [line.split(f"{user.name}: ", 1)[1] for line in hub_log.splitlines()
            if f"{user.name}: " in line]
    assert any(s.startswith("Admitted on ") for s in said), said  # (the placer may re-decide)
    assert any(s.startswith(f"placed on {pod.spec.node_name}") for s in said), said
    service = runner.running(namespace, only_pod(
        cluster, namespace, f"app.kubernetes.io/instance={release},"
        "app.kubernetes.io/component=service").metadata.name)
    assert service is not None and service.restarts == 0, service and service.log_text()
    # Its idle monitor reads the hub with the scopes the chart's role gives it.
    assert "HTTP 403" not in service.log_text(), service.log_text()
    assert hub.hosts_file is not None and f"{full}-service" in hub.hosts_file.read_text()

    # Stopping the server deletes the pod and its claim.
    r = user.api("DELETE", f"/users/{user.name}/server")
    assert r.status_code in (202, 204), (r.status_code, r.text[:500])
    wait_until(lambda: not user.server(), 90, f"{user.name}'s notebook stopped")
    wait_until(lambda: only_pod(cluster, namespace, "component=singleuser-server") is None
               and not cluster.core.list_namespaced_pod(
                   namespace, label_selector="component=singleuser-server").items,
               90, "notebook pod deleted")
    wait_until(lambda: claim_of(cluster, namespace, claim_name) is None, 60,
               "pinned claim deleted")
    wait_until(lambda: notebook.process.poll() is not None, 30, "notebook process ended")
    pvc = cluster.core.read_namespaced_persistent_volume_claim(f"claim-{user.name}", namespace)
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == pv  # kept across the stop

    # Started again, her file is there: the home volume outlived the pod.
    r = user.api("POST", f"/users/{user.name}/server", json=options)
    assert r.status_code in (201, 202), (r.status_code, r.text[:500])
    wait_until(lambda: (s := user.server()).get("ready") and s, 150,
               f"{user.name}'s notebook ready again")
    user.session.get(f"{url}user/{user.name}/lab", timeout=60)
    xsrf = user.session.cookies.get("_xsrf", path=f"/user/{user.name}/") or ""
    r = user.session.get(f"{url}user/{user.name}/api/contents/kept.txt", timeout=60,
                         headers={"X-XSRFToken": xsrf})
    assert r.status_code == 200 and r.json()["content"] == "still here", (
        r.status_code, r.text[:300])
    r = user.api("DELETE", f"/users/{user.name}/server")
    assert r.status_code in (202, 204), (r.status_code, r.text[:500])
    wait_until(lambda: not user.server(), 90, f"{user.name}'s notebook stopped again")
    cluster.core.delete_namespaced_persistent_volume_claim(f"claim-{user.name}", namespace)
    cluster.core.delete_persistent_volume(pv)


def test_helm_install_upgrade_uninstall_on_kwok_gpu_nodes(
    cluster: TestCluster, namespace: str, gpu_nodes: GpuNodes, tmp_path: Path,
    image_runner: PodRunner | None,
) -> None:
    a100, h100, cpu = gpu_nodes({"nodes": [
        {"name": "a100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": A100, "memory": "80Gi", "count": 2}]},
        {"name": "h100", "cpu": "32", "memory": "128Gi",
         "gpus": [{"model": "NVIDIA H100 80GB HBM3", "memory": "80Gi", "count": 2}]},
        {"name": "cpu", "cpu": "16", "memory": "64Gi"},
    ]})
    release = f"hub{secrets.token_hex(2)}"
    runner = image_runner
    if runner is not None:
        runner.accept = chart_pods(release)
        runner.start()
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values(release, 16, gpu_nodes.group)))
    helm_args = [str(CHART), "--namespace", namespace, "--values", str(values_file),
                 "--wait", "--timeout", "180s"]
    adopt_device_class(cluster, namespace, release)
    agent_recording(cluster, namespace)
    try:
        cluster.helm("install", release, *helm_args, timeout=240)

        # Every Deployment ready.
        deployments = cluster.apps.list_namespaced_deployment(namespace).items
        assert {d.metadata.name for d in deployments} == {
            f"{release}-aispike-hub-{c}" for c in ("hub", "proxy", "service")}
        for d in deployments:
            assert d.status.ready_replicas == d.spec.replicas == 1, d.metadata.name

        # Every DaemonSet pod scheduled and ready, each on the nodes it belongs on.
        nodes = {n.metadata.name: n.metadata.labels or {} for n in cluster.core.list_node().items}
        for ds in cluster.apps.list_namespaced_daemon_set(namespace).items:
            s = ds.status
            assert s.desired_number_scheduled == s.number_ready > 0, ds.metadata.name
            assert not s.number_misscheduled, ds.metadata.name
        base = f"app.kubernetes.io/instance={release}"
        agent = pods_by_node(cluster, namespace, f"{base},app.kubernetes.io/component=agent")
        on = set(agent.values())
        assert {a100.name, h100.name} <= on and cpu.name not in on
        assert all(GPU_MODEL_LABEL in nodes[n] for n in on), on
        pytorch = set(pods_by_node(cluster, namespace, f"{base},aispike.io/image=pytorch").values())
        assert a100.name in pytorch and h100.name not in pytorch and cpu.name not in pytorch
        assert {nodes[n][GPU_MODEL_LABEL] for n in pytorch} == {"NVIDIA-A100-SXM4-80GB"}
        minimal = set(pods_by_node(cluster, namespace, f"{base},aispike.io/image=minimal").values())
        assert {a100.name, h100.name, cpu.name} <= minimal

        # Cluster-wide objects: the DeviceClass and one PriorityClass per tier.
        assert cluster.scheduling.read_priority_class(f"{release}-normal").value == 100
        low = cluster.scheduling.read_priority_class(f"{release}-low")
        assert (low.value, low.preemption_policy) == (0, "Never")
        dc = cluster.custom.get_cluster_custom_object(
            "resource.k8s.io", "v1", "deviceclasses", DEVICE_CLASS)
        assert dc["metadata"]["labels"]["app.kubernetes.io/instance"] == release

        # The installed hub and service, running for real, start a GPU notebook.
        if runner is not None:
            agents_and_prepullers_run(cluster, runner, namespace, release)
            start_a_gpu_notebook(cluster, runner, namespace, release)

        # Upgrade with a changed quota: new service config, the service rolled, still ready.
        service_name = f"{release}-aispike-hub-service"
        before = cluster.apps.read_namespaced_deployment(service_name, namespace)
        unchanged = {c: pods_by_node(cluster, namespace, f"{base},app.kubernetes.io/component={c}")
                     for c in ("hub", "proxy")}
        values_file.write_text(json.dumps(values(release, 40, gpu_nodes.group)))
        cluster.helm("upgrade", release, *helm_args, timeout=240)
        cm = cluster.core.read_namespaced_config_map(service_name, namespace)
        config = json.loads(cm.data["aispike_service_config.json"])
        assert config["AISpikeService"]["policy"]["defaults"]["quota"]["gpu_memory"] == "40Gi"
        after = cluster.apps.read_namespaced_deployment(service_name, namespace)
        assert after.metadata.generation > before.metadata.generation
        assert (after.spec.template.metadata.annotations["checksum/config"]
                != before.spec.template.metadata.annotations["checksum/config"])
        wait_until(lambda: (d := cluster.apps.read_namespaced_deployment(service_name, namespace))
                   .status.updated_replicas == 1 and d.status.ready_replicas == 1
                   and d.status.observed_generation == d.metadata.generation,
                   60, "service rolled out")
        # The Secret's generated tokens survive the upgrade (looked up, not regenerated).
        secret = cluster.core.read_namespaced_secret(f"{release}-aispike-hub-secret", namespace)
        assert len(secret.data["serviceToken"]) > 40
        # Only the service rolled: the hub and the proxy (whose routes live in memory) stay, as
        # their config and the Secret's tokens did not change.
        for c, pods in unchanged.items():
            assert pods_by_node(
                cluster, namespace, f"{base},app.kubernetes.io/component={c}") == pods, c
        if runner is not None:
            # The rolled service runs the new config and the proxy reaches it by name again.
            url = proxy_url(cluster, runner, namespace, release)
            wait_until(lambda: answers(f"{url}services/aispike/api/health"), 90,
                       "the rolled AISpike service to answer through the proxy")

        # Uninstall: nothing of the release is left, cluster-scoped objects included.
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait",
                     "--timeout", "120s", timeout=180)
        wait_until(lambda: not release_objects(cluster, namespace, release), 60,
                   "every object of the release gone")
        if runner is not None:
            wait_until(lambda: not runner.alive(), 60, "every process of the release ended")
    except BaseException:
        if runner is not None:
            print(runner.logs())
        raise
    finally:
        if release in cluster.helm("list", "-n", namespace, "--short", check=False).stdout:
            cluster.helm("uninstall", release, "--namespace", namespace, "--wait", check=False)
        restore_device_class(cluster)
        release_claims(cluster, namespace)


def release_claims(cluster: TestCluster, namespace: str) -> None:
    """After a failure the hub that would have released a notebook's claim may be gone: drop the
    placer's finalizers, so the namespace can go."""
    claims = cluster.custom.list_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaims")["items"]
    for claim in claims:
        if claim["metadata"].get("finalizers"):
            with contextlib.suppress(ApiException):
                cluster.custom.patch_namespaced_custom_object(
                    "resource.k8s.io", "v1", namespace, "resourceclaims",
                    claim["metadata"]["name"], {"metadata": {"finalizers": None}})
