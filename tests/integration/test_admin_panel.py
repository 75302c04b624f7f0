"""The admin panel in a browser: a real hub, the AISpike service, kwok GPU nodes, notebook pods.

Playwright drives Debian's ``/usr/bin/chromium`` (headless, never ``playwright install``).  It
lives beside the other hub tests to share their session fixtures (one cluster, one pod runner).

One hub for the module with the real ``AISpikeSpawner``: the service (reading the cluster from
Kubernetes: ResourceSlices, claims, nodes, pods) admits each server, the hub's placer pins its
ResourceClaim and kube-scheduler allocates it; the pod runner runs ``jupyterhub-singleuser`` for
each pod kwok marks Running; a recorded agent serves GPU use for the node (alice computes, bob
holds memory idle); the idle monitor runs in dry-run, so only the panel's stop action stops
anything.  The history charts read from a stand-in for Prometheus (a small HTTP server in this
process answering ``/api/v1/query_range`` in Prometheus' format; not a real Prometheus), then
fall back to the service's own history when it stops.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from .conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    GpuNodes,
    RunningHub,
    TestCluster,
    _free_port,
    browser_or_skip,
    new_username,
    wait_until,
)
from .hubstack import (
    ServiceHub,
    aispike_service_config,
    ensure_priority_classes,
    kube_spawner_config,
    service_command,
    wait_for_service,
)
from .podrunner import PodRunner
from .recorded_agent import RecordedAgent, send_json

pytestmark = pytest.mark.browser
NODES = [
    {"name": "panel-a100", "cpu": "64", "memory": "512Gi",
     "gpus": [{"model": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 2,
               "nvlinkDomain": "nvl0"}]},
    {"name": "panel-h100", "cpu": "64", "memory": "512Gi",
     "gpus": [{"model": "NVIDIA H100 80GB HBM3", "memory": "80Gi", "count": 1}]},
]


class StandInPrometheus(BaseHTTPRequestHandler):
    """``/api/v1/query_range`` answered in Prometheus' format: 0.5 for every series and step."""

    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlparse

        url = urlparse(self.path)
        args = {k: float(v[0]) for k, v in parse_qs(url.query).items() if k != "query"}
        start, end, step = args["start"], args["end"], args["step"]
        values = [[start + i * step, "0.5"] for i in range(int((end - start) // step) + 1)]
        send_json(self, {"status": "success", "data": {
            "resultType": "matrix", "result": [{"metric": {}, "values": values}]}},
            200 if url.path == "/api/v1/query_range" else 404)

    def log_message(self, *args: Any) -> None:
        pass


class Stack(ServiceHub):
    def __init__(self, hub: RunningHub, service_url: str, admin: str, users: dict[str, str],
                 nodes: list[str], browser: Any) -> None:
        super().__init__(hub, service_url)
        self.admin = admin
        self.users = users
        self.nodes = nodes
        self.browser = browser
        self.placed: dict[str, str] = {}
        self.prometheus: ThreadingHTTPServer | None = None
        self.cluster: Any = None
        self.namespace = ""

    def hub_claim(self, user: str) -> dict[str, Any]:
        """The pinned ResourceClaim of ``user``'s default server (real AISpikeSpawner)."""
        return dict(self.cluster.custom.get_namespaced_custom_object(
            "resource.k8s.io", "v1", self.namespace, "resourceclaims", f"jupyter-{user}-gpu"))

    def login(self, user: str) -> Any:
        """A browser page logged in to the hub as ``user`` (dummy authenticator)."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(f"{self.hub.url}hub/login?next=%2Fhub%2Fhome")  # home: start no server
        page.fill("#username_input", user)
        page.fill("#password_input", "any")
        page.click("#login_submit")
        page.wait_for_url("**/hub/home")
        return page

    def open(self, page: Any, tail: str) -> Any:
        """Open a panel page through the hub's proxy, as a browser does."""
        return page.goto(f"{self.hub.url}services/aispike/admin/{tail}")


@pytest.fixture(scope="module")
def stack(cluster: TestCluster, hub_factory: Callable[..., RunningHub], hub_namespace: str,
          pod_runner: PodRunner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sync_playwright = browser_or_skip()
    gpu_nodes = GpuNodes(cluster, f"p{secrets.token_hex(3)}")
    created = gpu_nodes({"nodes": NODES})
    names = [n.name for n in created]
    users = {"busy": new_username(), "idle": new_username(), "plain": new_username()}
    admin = f"admin-{secrets.token_hex(3)}"
    agent = RecordedAgent().start()  # answers once the pods are placed (503 until then)
    workdir = tmp_path_factory.mktemp("aispike-panel")
    prometheus = ThreadingHTTPServer(("127.0.0.1", 0), StandInPrometheus)
    threading.Thread(target=prometheus.serve_forever, daemon=True).start()
    made = ensure_priority_classes(cluster)
    # The service reads the cluster from Kubernetes (ResourceSlices, claims, nodes, pods),
    # limited to this test's nodes like the hub's placer.
    (workdir / "aispike_service_config.py").write_text(f"""
c.AISpikeService.inventory = "kubernetes"
c.Inventory.node_selector = {gpu_nodes.selector!r}
c.AISpikeService.policy = {{"users": {{{users["busy"]!r}: {{"quota": {{"gpu_memory": "16Gi"}}}}}}}}
c.AISpikeService.tick_interval = 0.5
c.IdleMonitor.poll_interval = 0.5
c.IdleMonitor.timeout = 1
c.IdleMonitor.gpu_window = 1
c.IdleMonitor.mode = "dry-run"
c.IdleMonitor.poll_kernels = False
c.IdleMonitor.agent_urls = {[agent.url(n) for n in names]!r}
c.AdminPanel.history_interval = 1
c.AdminPanel.map_cache_seconds = 0
c.AdminPanel.prometheus_url = "http://127.0.0.1:{prometheus.server_address[1]}"
c.AdminPanel.prometheus_timeout = 2
""")
    port = _free_port()
    token = secrets.token_hex(16)
    service_url = f"http://127.0.0.1:{port}/services/aispike/"
    command = service_command(workdir, f"--config={workdir / 'aispike_service_config.py'}")
    hub = hub_factory(
        "panel",
        kube_spawner_config("aispike", hub_namespace)
        + f"c.AISpikeSpawner.node_selector = {gpu_nodes.selector!r}\n"
        + f"c.Inventory.node_selector = {gpu_nodes.selector!r}\n"
        + aispike_service_config(
            port, token, command,
            service_scopes=["admin:servers", "list:users", "read:users", "read:groups",
                            "read:users:activity", "servers", "custom:aispike:admit"],
            admin_scopes=["custom:aispike:admin"], admin_users=[admin],
            # Browser logins carry the admin scope to the service (only for users who have it).
            allowed_scopes=["custom:aispike:admin"],
            environment={"KUBECONFIG": os.environ.get("KUBECONFIG", "")})
        # Prometheus scrapes with JupyterHub's read:metrics (the chart's aispike-metrics role).
        + "c.JupyterHub.load_roles.append({'name': 'metrics-scraper', "
        f"'users': [{admin!r}], 'scopes': ['read:metrics']}})\n",
    )
    wait_for_service(service_url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        s = Stack(hub, service_url, admin, users, names, browser)
        s.cluster, s.namespace = cluster, hub_namespace
        s.prometheus = prometheus
        try:
            for role, gib in (("busy", 8), ("idle", 24)):
                user = users[role]
                assert hub.api("POST", f"/users/{user}").status_code == 201
                r = hub.api("POST", f"/users/{user}/server", json={"gpu_gib": gib}, timeout=120)
                assert r.status_code in (201, 202), r.text
            assert hub.api("POST", f"/users/{users['plain']}").status_code == 201
            try:
                wait_until(lambda: s.running(users["busy"]) and s.running(users["idle"]), 150,
                           "both servers ready")
            except AssertionError:
                raise AssertionError(hub.log_text()[-5000:]) from None
            # Where Kubernetes bound the pods (the service pinned them; kwok runs them): the
            # recorded agent of that node reports them (busy computes, idle holds memory).
            pods = {p.metadata.name: p
                    for p in cluster.core.list_namespaced_pod(hub_namespace).items}
            s.placed = {u: pods[f"jupyter-{u}"].spec.node_name
                        for u in (users["busy"], users["idle"])}
            agent.nodes = {n: [] for n in names}
            for role in ("busy", "idle"):
                agent.nodes[s.placed[users[role]]].append((users[role], "", role))
            yield s
        finally:
            for user in users.values():
                hub.api("DELETE", f"/users/{user}/server", timeout=120)
            browser.close()
            agent.stop()
            if s.prometheus is not None:
                s.prometheus.shutdown()
                s.prometheus.server_close()
            gpu_nodes.delete_all()
            for name in made:
                cluster.scheduling.delete_priority_class(name)


def test_the_map_shows_each_running_server_as_its_slice_on_its_node(stack: Stack) -> None:
    busy, idle = stack.users["busy"], stack.users["idle"]
    # The service packs both slices onto one GPU; Kubernetes bound both pods to its node.
    (where,) = set(stack.placed.values())
    other = next(n for n in stack.nodes if n != where)
    # The idle monitor has judged both (busy computes; idle holds memory and does nothing).
    wait_until(lambda: {r["user"]: r["verdict"] for r in
                        stack.service("GET", "idle/report").json()["servers"]}
               .get(idle) == "idle", 60, "the idle verdict")

    page = stack.login(stack.admin)
    assert stack.open(page, "").status == 200
    page.wait_for_selector("#aispike-panel[data-loaded='nodes']")
    # The hub's own look: its stylesheet, its navigation bar with the Services menu.
    # (with the hub's content hash in the URL, so the browser reuses its cached copy)
    assert page.locator("link[href^='/hub/static/css/style.min.css?v=']").count() == 1
    # The first view came inside the page: no request to the map API before it was drawn.
    assert page.evaluate("performance.getEntriesByType('resource')"
                         ".filter(r => r.name.includes('/api/panel/map')).length") == 0
    assert page.locator("nav.navbar a.dropdown-item", has_text="aispike").count() == 1

    node = page.locator(f".node[data-node='{where}']")
    mine = node.locator(f".seg[data-user='{busy}']")
    theirs = node.locator(f".seg[data-user='{idle}']")
    assert mine.count() == 1 and theirs.count() == 1
    assert mine.get_attribute("data-mib") == str(8 * 1024)
    assert theirs.get_attribute("data-mib") == str(24 * 1024)
    assert mine.get_attribute("data-state") == "busy"
    assert theirs.get_attribute("data-state") == "idle"
    # Both slices on one GPU: 8 + 24 of 80 GiB, the rest free; drawn to scale.
    gpu = mine.locator("xpath=ancestor::div[contains(@class,'gpu')][1]")
    assert gpu.locator(f".seg[data-user='{idle}']").count() == 1
    bar_width = gpu.locator(".bar").bounding_box()["width"]
    assert abs(mine.bounding_box()["width"] / bar_width - 0.1) < 0.03
    assert page.locator(f".node[data-node='{other}'] .seg[data-user]").count() == 0
    # Drawn where Kubernetes allocated it: the GPU of the pinned claim's allocation (the
    # service reads claims and pods from the API server, by their aispike.io/hub-server).
    claim = stack.hub_claim(busy)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert result["pool"] == where
    index = result["device"].removeprefix("gpu-")
    assert gpu.get_attribute("data-gpu") == index
    assert claim["metadata"]["annotations"]["aispike.io/hub-server"] == f"{busy}/"

    mine.hover()
    tip = page.locator("#map-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert busy in text and "8 GiB" in text and "busy" in text and "live 4.4 GiB" in text, text

    # Filters: by model (the H100 node only), by user.
    page.select_option("#f-model", "NVIDIA H100 80GB HBM3")
    page.click("#map-filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('.node').length === 1")
    assert page.locator(".node").get_attribute("data-node") == stack.nodes[1]
    page.click("#map-reset")
    page.fill("#f-user", idle)
    page.click("#map-filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('.node').length === 1")
    assert page.locator(".node").get_attribute("data-node") == where

    # History from Prometheus (the stand-in), drawn as SVG.
    stack.open(page, "history")
    page.wait_for_selector("#aispike-panel[data-loaded='history'][data-source='prometheus']")
    assert page.locator("#chart-allocation polyline").count() == 1
    assert page.locator("#history-note").is_hidden()
    # Prometheus down: the service's own samples (every second into the store), with a note.
    assert stack.prometheus is not None
    stack.prometheus.shutdown()
    stack.prometheus.server_close()
    stack.prometheus = None
    stack.open(page, "history")
    page.wait_for_selector("#aispike-panel[data-loaded='history'][data-source='history']")
    # The default 24-hour window averages these seconds of samples into one point, which is no
    # line: the chart says so instead of drawing one. The 1-hour window's 15 s points draw one.
    # The 1-hour window has 15 s points: once two of them exist (the samples began with the
    # stack, seconds ago on a busy machine), it draws the line.
    if page.locator("#chart-allocation polyline").count() == 0:
        assert "Not enough history yet" in page.inner_text("#chart-allocation")
        deadline = time.monotonic() + 90
        while page.locator("#chart-allocation polyline").count() == 0:
            assert time.monotonic() < deadline, page.inner_text("#chart-allocation")
            stack.open(page, "history")
            page.wait_for_selector(
                "#aispike-panel[data-loaded='history'][data-source='history']")
            page.select_option("#h-hours", "1")
            page.wait_for_timeout(3000)
    assert page.locator("#chart-allocation polyline").count() == 1
    note = page.locator("#history-note")
    assert note.is_visible() and "did not answer" in note.inner_text()

    # The gauges Prometheus scrapes: for admins (a hub token with the admin scope) only.
    metrics = requests.get(f"{stack.service_url}metrics", timeout=30,
                           headers={"Authorization": f"token {stack.hub.token}"})
    assert metrics.status_code == 200, metrics.text
    assert 'aispike_panel_held_gpus{state="busy"} 0.1' in metrics.text.splitlines()
    # A scraper's token needs JupyterHub's read:metrics, not the quota-editing scope: with
    # read:metrics alone it reads the gauges and nothing else.
    r = stack.hub.api("POST", f"/users/{stack.admin}/tokens",
                      json={"note": "prometheus", "scopes": ["read:metrics"]})
    assert r.status_code == 201, r.text
    scraper = str(r.json()["token"])
    assert requests.get(f"{stack.service_url}metrics", timeout=30,
                        headers={"Authorization": f"token {scraper}"}).status_code == 200
    assert stack.service("GET", "panel/quotas", token=scraper).status_code == 403

    # The same data as JSON.
    view = stack.service("GET", "panel/map", params={"node": where}).json()
    segs = view["nodes"][0]["gpus"][0]["segments"]
    assert {(s["user"], s["mib"], s["state"]) for s in segs} == {
        (busy, 8 * 1024, "busy"), (idle, 24 * 1024, "idle")}
    page.context.close()


def test_a_user_without_the_admin_scope_gets_403_on_pages_and_api(stack: Stack) -> None:
    plain = stack.users["plain"]
    page = stack.login(plain)
    for tail in ("", "quotas", "idle"):
        response = stack.open(page, tail)
        assert response.status == 403, (tail, response.status)
        assert "custom:aispike:admin" in page.locator("#aispike-error").inner_text()
    page.context.close()
    token = stack.user_token(plain)
    for path in ("panel/map", "panel/quotas", "panel/queue", "panel/history", "idle/report"):
        assert stack.service("GET", path, token=token).status_code == 403, path
    assert requests.get(f"{stack.service_url}metrics", timeout=30,
                        headers={"Authorization": f"token {token}"}).status_code == 403
    r = stack.service("POST", f"panel/idle/{stack.users['idle']}//stop", token=token,
                      json={"confirm": f"{stack.users['idle']}/"})
    assert r.status_code == 403
    assert stack.running(stack.users["idle"])


def test_editing_a_quota_works_and_a_bad_value_is_refused_naming_the_field(
        stack: Stack) -> None:
    busy = stack.users["busy"]
    page = stack.login(stack.admin)
    stack.open(page, "quotas")
    page.wait_for_selector("#aispike-panel[data-loaded='quotas']")
    row = page.locator(f"#quota-users tr[data-name='{busy}']")
    cell = row.locator("td[data-res='gpu_memory_mib']")
    assert "8 GiB / 16 GiB" in cell.inner_text()
    row.click()
    assert page.input_value("#q-name") == busy and page.input_value("#q-gpu_memory") == "16Gi"

    page.fill("#q-gpu_memory", "lots")
    page.click("#q-save")
    page.wait_for_selector("#q-gpu_memory.is-invalid")
    status = page.locator("#q-status").inner_text()
    assert f"users.{busy}.quota.gpu_memory" in status, status
    policy = stack.service("GET", "policy").json()
    assert policy["users"][busy]["quota"]["gpu_memory"] == "16Gi"

    page.fill("#q-gpu_memory", "32Gi")
    page.fill("#q-servers", "3")
    page.click("#q-save")
    page.wait_for_selector("#q-status .text-success")
    page.wait_for_function(
        f"document.querySelector(\"#quota-users tr[data-name='{busy}'] "
        f"td[data-res='gpu_memory_mib']\").textContent.includes('/ 32 GiB')")
    policy = stack.service("GET", "policy").json()
    assert policy["users"][busy]["quota"] == {"gpu_memory": "32Gi", "servers": 3}
    audit = stack.service("GET", "audit", params={"action": "policy.update"}).json()["entries"]
    assert audit[0]["actor"] == f"user:{stack.admin}" and audit[0]["target"] == f"users.{busy}"
    page.context.close()


def test_the_stop_action_needs_a_confirmation_then_stops_the_server(stack: Stack) -> None:
    idle = stack.users["idle"]
    page = stack.login(stack.admin)
    stack.open(page, "idle")
    page.wait_for_selector("#aispike-panel[data-loaded='idle']")
    row = page.locator(f"#idle tr[data-user='{idle}']")
    assert row.locator(".verdict").inner_text() == "idle"
    # Without the confirmation in the body the API refuses, naming the field.
    bad = stack.service("POST", f"panel/idle/{idle}//stop", json={})
    assert bad.status_code == 400 and bad.json()["field"] == "confirm"
    row.get_by_role("button", name="Stop").click()
    assert stack.running(idle), "one click must not stop anything"
    row.locator("button.confirm").click()
    page.wait_for_selector("#idle-status .alert-success")
    wait_until(lambda: not stack.running(idle), 60, "the server stopped through the hub")
    audit = stack.service("GET", "audit", params={"action": "panel.idle-stop"}).json()
    assert audit["entries"][0]["target"] == f"{idle}/"
    assert audit["entries"][0]["detail"]["by"] == f"user:{stack.admin}"
    assert stack.running(stack.users["busy"])
    page.context.close()
