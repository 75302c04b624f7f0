"""The admin panel's data: the GPU map, quotas, queue, history and page rendering (no HTTP).

The pages and API through a real hub are in tests/browser/test_admin_panel.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.model import GIB_IN_MIB, Assignment, Gpu, Node, SliceRequest
from aispike_hub.placement.fragmentation import default_notebook_workload
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.api import ServiceContext
from aispike_hub.service.gpumap import ClusterMap, Live, MapFilter, holdings_of
from aispike_hub.service.idle import IdleMonitor
from aispike_hub.service.panel import AdminPanel
from aispike_hub.service.store import Store

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
GIB = GIB_IN_MIB


def node(name: str, model: str = A100, gpus: int = 2, pool: str = "") -> Node:
    return Node(name, 64_000, 512 * GIB,
                tuple(Gpu(i, model, 80 * GIB, nvlink_domain=f"nvl{i // 2}") for i in range(gpus)),
                labels={"aispike.io/pool": pool} if pool else {})


def small_map() -> ClusterMap:
    nodes = [node("a-0", pool="train"), node("a-1", pool="train"), node("h-0", H100, 1)]
    holdings = [
        *holdings_of(Assignment("a-0", (0,), (8 * GIB,)), "alice", "", ["ml101"], "normal"),
        *holdings_of(Assignment("a-0", (0,), (40 * GIB,)), "bob", "big", ["lab"], "low"),
        *holdings_of(Assignment("a-0", (1,), (78 * GIB,)), "carol", "", ["lab"]),
        *holdings_of(Assignment("a-1", (0,), (16 * GIB,))),  # another workload
    ]
    live = {("alice", ""): Live("busy", 6 * GIB, 91.0), ("bob", "big"): Live("idle", 40 * GIB, 0.0)}
    return ClusterMap(nodes, holdings, live, default_notebook_workload(), ("aispike.io/pool",))


def test_each_gpu_is_split_into_its_slices_with_owner_state_and_live_use() -> None:
    view = small_map().view(MapFilter(pool="train"))
    assert view["level"] == "nodes" and [n["name"] for n in view["nodes"]] == ["a-0", "a-1"]
    gpu0, gpu1 = view["nodes"][0]["gpus"]
    assert [(s["user"], s["mib"], s["state"]) for s in gpu0["segments"]] == [
        ("alice", 8 * GIB, "busy"), ("bob", 40 * GIB, "idle")]
    assert gpu0["segments"][0]["used_mib"] == 6 * GIB and gpu0["segments"][0]["util"] == 91.0
    assert gpu0["free_mib"] == 32 * GIB and not gpu0["fragmented"]
    assert gpu0["nvlink"] == "nvl0" and gpu0["model"] == A100
    # 2 GiB left: smaller than any request type of the workload (4 GiB is the smallest).
    assert gpu1["segments"][0]["state"] == "unknown" and gpu1["free_mib"] == 2 * GIB
    assert gpu1["fragmented"]
    other = view["nodes"][1]["gpus"][0]["segments"]
    assert other == [{"mib": 16 * GIB, "state": "other"}]


def test_totals_and_pools_add_up() -> None:
    m = small_map()
    view = m.view(MapFilter(), level="pools")
    pools = {p["pool"]: p for p in view["pools"]}
    assert set(pools) == {"train", H100}  # a node without a pool label: its GPU model
    train = pools["train"]
    assert train["nodes"] == 2 and train["gpus"] == 4 and train["total_mib"] == 320 * GIB
    assert (train["busy"], train["idle"], train["unknown"], train["other"]) == (
        8 * GIB, 40 * GIB, 78 * GIB, 16 * GIB)
    assert train["fragmented"] == 2 * GIB
    assert train["free"] == 320 * GIB - 8 * GIB - 40 * GIB - 78 * GIB - 16 * GIB - 2 * GIB
    assert train["allocation"] == pytest.approx(142 / 320, abs=1e-4)
    assert view["totals"]["gpus"] == 5


def test_new_verdicts_change_the_totals_of_a_built_map() -> None:
    m = small_map()
    before = m.view(MapFilter(), level="pools")["totals"]
    assert (before["busy"], before["idle"]) == (8 * GIB, 40 * GIB)
    m.live = {("carol", ""): Live("busy", 70 * GIB, 99.0)}  # a new poll: new verdicts
    after = m.view(MapFilter(), level="pools")["totals"]
    assert (after["busy"], after["idle"], after["unknown"]) == (78 * GIB, 0, 48 * GIB)


def test_holdings_that_overfill_a_gpu_are_reported_not_drawn() -> None:
    nodes = [node("a-0", gpus=1)]
    holdings = [*holdings_of(Assignment("a-0", (0,), (60 * GIB,)), "erin", ""),
                *holdings_of(Assignment("a-0", (0,), (30 * GIB,)), "fred", "x"),
                *holdings_of(Assignment("a-0", (3,), (8 * GIB,)), "gina", "")]
    m = ClusterMap(nodes, holdings, {}, default_notebook_workload())
    assert m.stale == ["fred/x: node a-0 GPU 0: free memory would be -10240 of 81920 MiB",
                       "gina/: node a-0 has no GPU 3"]
    gpu = m.view(MapFilter())["nodes"][0]["gpus"][0]
    assert [s["user"] for s in gpu["segments"]] == ["erin"] and gpu["free_mib"] == 20 * GIB


def test_filters_by_model_node_group_and_user() -> None:
    m = small_map()
    names = lambda f: [n["name"] for n in m.view(f, level="nodes")["nodes"]]  # noqa: E731
    assert names(MapFilter(model=H100)) == ["h-0"]
    assert names(MapFilter(node="A-1")) == ["a-1"]
    assert names(MapFilter(group="lab")) == ["a-0"]
    assert names(MapFilter(user="nobody")) == []
    assert m.view(MapFilter(), auto_nodes=2)["level"] == "pools"
    assert m.view(MapFilter(), auto_nodes=10)["level"] == "nodes"


def test_a_holding_that_no_longer_fits_is_reported_not_drawn() -> None:
    nodes = [node("a-0", gpus=1)]
    holdings = holdings_of(Assignment("gone", (0,), (8 * GIB,)), "dave", "")
    m = ClusterMap(nodes, holdings, {}, default_notebook_workload())
    assert m.stale and "dave" in m.stale[0]
    assert m.view(MapFilter())["nodes"][0]["gpus"][0]["segments"] == []


def test_sample_counts_gpu_shares_by_state() -> None:
    s = small_map().sample()
    assert s["gpus"] == 5
    assert s["busy_gpus"] == pytest.approx(0.1) and s["idle_gpus"] == pytest.approx(0.5)
    assert s["other_gpus"] == pytest.approx(0.2)


def test_large_cluster_aggregates_quickly() -> None:
    import time

    nodes = [node(f"n-{i}", gpus=4, pool=f"pool-{i % 6}") for i in range(1500)]
    holdings = [h for i in range(0, 1500, 2)
                for h in holdings_of(Assignment(f"n-{i}", (i % 4,), (20 * GIB,)), f"u{i}", "")]
    started = time.perf_counter()
    m = ClusterMap(nodes, holdings, {}, default_notebook_workload(), ("aispike.io/pool",))
    pools = m.view(MapFilter())
    zoom = m.view(MapFilter(pool="pool-0"))
    elapsed = time.perf_counter() - started
    assert pools["level"] == "pools" and len(pools["pools"]) == 6
    assert zoom["level"] == "nodes" and len(zoom["nodes"]) == 250
    assert pools["totals"]["gpus"] == 6000
    assert elapsed < 5  # generous: 2 shared cores; benchmarks/admin_panel.py measures it


@pytest.fixture
def panel(tmp_path: Path) -> AdminPanel:
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    policy = policy_from_dict({
        "users": {"alice": {"quota": {"gpu_memory": "16Gi"}}},
        "groups": {"lab": {"quota": {"gpu_memory": "80Gi"}, "borrowing": {"gpu_memory": "20Gi"}}},
    })
    controller = AdmissionController(store, StaticInventory([node("a-0", gpus=1)]), policy)
    ctx = ServiceContext(controller, "aispike")
    monitor = IdleMonitor(store, "http://127.0.0.1:1/hub/api", "t")
    return AdminPanel(ctx, monitor, "/services/aispike/", hub_prefix="/hub/")


def test_panel_map_quotas_and_queue_from_the_controller(panel: AdminPanel) -> None:
    c = panel.controller
    req = lambda gib: SliceRequest(gpu_memory_mib=gib * GIB)  # noqa: E731
    assert c.admit(User("alice", frozenset({"lab"})), "", req(8), "t").state == "admitted"
    assert c.admit(User("bob", frozenset({"lab"})), "big", req(60), "t").state == "admitted"
    queued = c.admit(User("carol"), "", req(40), "t")
    assert queued.state == "queued"

    view = panel.map_view({})
    segs = view["nodes"][0]["gpus"][0]["segments"]
    assert {(s["user"], s["server"], s["mib"]) for s in segs} == {
        ("alice", "", 8 * GIB), ("bob", "big", 60 * GIB)}
    assert all(s["state"] == "unknown" for s in segs)  # the idle monitor has not polled

    q = panel.quotas()
    alice = next(u for u in q["users"] if u["user"] == "alice")
    assert alice["resources"]["gpu_memory_mib"] == {
        "used": 8 * GIB, "quota": 16 * GIB, "ceiling": 16 * GIB, "source": "your user entry"}
    assert alice["entry"] == {"quota": {"gpu_memory": "16Gi"}}
    lab = next(g for g in q["groups"] if g["group"] == "lab")
    assert lab["resources"]["gpu_memory_mib"]["used"] == 68 * GIB
    assert lab["resources"]["gpu_memory_mib"]["ceiling"] == 100 * GIB
    assert lab["members_running"] == ["alice", "bob"] and lab["over"] == []

    waiting = panel.queue()["queued"]
    assert [(w["user"], w["position"]) for w in waiting] == [("carol", 1)]
    assert waiting[0]["reasons"] and waiting[0]["wait_seconds"] >= 0
    assert waiting[0]["gives_up_in_seconds"] > 500


def test_history_samples_and_series(panel: AdminPanel) -> None:
    c = panel.controller
    panel.history_interval = 600  # a gap up to 2 intervals counts (longer: the service was down)
    assert c.admit(User("dave"), "", SliceRequest(gpu_memory_mib=40 * GIB), "t").state == "admitted"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for minutes in (30, 20, 10):
        panel.history.record(now - dt.timedelta(minutes=minutes),
                             {"allocation": 0.5, "busy_gpus": 0.5, "idle_gpus": 0.25,
                              "gpus": 1})
    panel.sample()
    out = panel.history_view(1)
    assert out["samples"] == 4 and out["points"]
    # 3 samples 10 min apart at 0.5 busy GPUs (the last counts until the next one): 0.25 GPU-h.
    assert out["gpu_hours"]["busy"] == pytest.approx(0.5 * 30 / 60, abs=0.01)
    assert out["points"][-1]["allocation"] == pytest.approx(0.5)


def test_pages_extend_the_hubs_page_with_its_static_files(panel: AdminPanel) -> None:
    user = {"name": "root", "scopes": ["custom:aispike:admin"]}
    html = panel.render("panel/map.html", user, "tok", page_title="GPU map", active="map")
    # Static URLs carry the content hash the hub gives them (?v=...): browsers cache them.
    assert 'href="/hub/static/css/style.min.css?v=' in html
    assert "/hub/static/components/bootstrap/dist/js/bootstrap.bundle.min.js?v=" in html
    assert 'href="/services/aispike/panel-static/panel.css?v=' in html
    assert 'src="/services/aispike/panel-static/panel.js?v=' in html
    assert "baseUrl: '/hub/static/js'" in html  # require.js' base: no version
    assert 'xsrf_token: "tok"' in html and 'id="map-filters"' in html
    assert '>aispike</a>' in html  # the Services menu
    for page in ("quotas", "queue", "idle", "history"):
        assert 'id="aispike-panel"' in panel.render(f"panel/{page}.html", user, "t",
                                                    page_title=page, active=page)
    error = panel.render("panel/error.html", None, "", status_code=403, message="no",
                         page_title="Error", active="")
    assert "403" in error and "Login" in error
