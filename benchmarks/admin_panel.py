"""Admin panel page load on a large cluster: a real hub + the AISpike service + kwok nodes.

Not a test: prints tables.  For each size in ``--nodes`` it creates that many kwok GPU nodes
(4 GPUs each, in six pools) in the test cluster, gives the service the same nodes, fills the
store with admitted slices placed by the placement core (about ``--fill`` of the GPU memory;
seeded straight into the store, as a hub that has run for a while would hold them), starts a real
hub with the service, logs in with Debian's chromium and times:

- ``page``: navigation to the GPU map until it is drawn (the pool overview), cold and warm,
  with where the time went (the browser's Navigation and Resource Timing: document, DOM ready,
  requests, bytes, the map request if the page made one, DOM size);
- ``zoom``: one pool's nodes and GPUs drawn (about a sixth of the nodes);
- ``api``: the JSON behind them (``api/panel/map``, a pool, ``api/panel/quotas``), with their
  size as JSON and on the wire (gzip accepted, as browsers do).

The service rebuilds the map only when the slices, nodes or policy changed; the first request
(``cold``) pays for the build, the others show what an admin browsing a steady cluster sees.
``--service-repo`` runs the service (and its pages) from another checkout, e.g. the previous
commit, to compare before and after with the same harness.

    python benchmarks/admin_panel.py --nodes 50,500,1500
    python benchmarks/admin_panel.py --nodes 60 --screenshots docs/images   # the docs' pictures
"""


from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import requests  # noqa: E402
import yaml  # noqa: E402
from integration.conftest import (  # noqa: E402
    BASE_HUB_CONFIG,
    _connect,
    _free_port,
    stack_paths,
)

from aispike_hub.admission.wire import assignment_to_dict, request_to_dict  # noqa: E402
from aispike_hub.kube.nodespec import nodes_from_spec  # noqa: E402
from aispike_hub.kube.slices import node_manifests, resource_slice_name  # noqa: E402
from aispike_hub.model import GIB_IN_MIB, SliceRequest  # noqa: E402
from aispike_hub.placement.engine import PlacementEngine  # noqa: E402
from aispike_hub.placement.state import ClusterState  # noqa: E402
from aispike_hub.service.store import ReservationRow, Store, utcnow  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
POOLS = [("train-a100", "NVIDIA A100-SXM4-80GB", "80Gi"), ("train-h100", "NVIDIA H100 80GB HBM3",
                                                           "80Gi"),
         ("teach-l40s", "NVIDIA L40S", "48Gi"), ("teach-a10", "NVIDIA A10", "24Gi"),
         ("infer-l4", "NVIDIA L4", "24Gi"), ("big-h200", "NVIDIA H200", "141Gi")]
GROUPS = ["ml101", "vision-lab", "nlp-lab", "robotics", "staff"]


def spec(n_nodes: int, group: str) -> dict[str, Any]:
    nodes = []
    for i in range(n_nodes):
        pool, model, memory = POOLS[i % len(POOLS)]
        nodes.append({
            "name": f"{group}-{pool}-{i:04d}", "cpu": "96", "memory": "1Ti",
            "labels": {"aispike.io/pool": pool},
            "gpus": [{"model": model, "memory": memory, "count": 2, "nvlinkDomain": "nvl0",
                      "numaNode": 0},
                     {"model": model, "memory": memory, "count": 2, "nvlinkDomain": "nvl1",
                      "numaNode": 1}]})
    return {"nodes": nodes}


def kubectl(bin_dir: Path, *args: str, stdin: str | None = None) -> None:
    subprocess.run([str(bin_dir / "kubectl"), *args], input=stdin, text=True, check=True,
                   capture_output=True, timeout=900)


def seed(db: str, node_spec: dict[str, Any], fill: float, seed_value: int = 7) -> int:
    """Admitted slices placed by the placement core until ``fill`` of GPU memory is held."""
    import random

    rng = random.Random(seed_value)
    nodes = [s.node for s in nodes_from_spec(node_spec)]
    state = ClusterState(nodes)
    engine = PlacementEngine("aispike")
    total = int(state.gpu_cap[state.gpu_exists].sum())
    sizes = [4, 8, 8, 16, 16, 24, 40]
    store = Store(db)
    rows = []
    held, i = 0, 0
    while held < fill * total:
        gib = rng.choice(sizes)
        request = (SliceRequest(gpu_count=1, cpu_milli=2000) if rng.random() < 0.1 else
                   SliceRequest(gpu_memory_mib=gib * GIB_IN_MIB, cpu_milli=2000))
        user = f"user{rng.randrange(400):03d}"
        decision = engine.place(state, request, f"{user}/s{i}")
        if decision.assignment is None:
            break
        state.commit(decision.assignment)
        mib = sum(decision.assignment.gpu_memory_mib)
        held += mib
        rows.append(ReservationRow(
            user=user, server=f"s{i}", state="admitted", seq=i + 1,
            groups=[GROUPS[hash(user) % len(GROUPS)]], request=request_to_dict(request),
            charge={"gpu_memory_mib": mib, "gpus": len(decision.assignment.gpu_indices),
                    "cpu_milli": 2000, "memory_mib": 0, "servers": 1},
            tier="normal", priority=100, assignment=assignment_to_dict(decision.assignment),
            reasons=[], preempting=[], created_at=utcnow(), admitted_at=utcnow()))
        i += 1
    with store.session() as s:
        s.add_all(rows)
    store.close()
    return len(rows)


def start_hub(workdir: Path, service_cmd: list[str], port: int, token: str, admin: str,
              service_repo: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    paths = stack_paths()
    chp = Path(paths["proxy_bin"]) / "configurable-http-proxy"
    ports = {"proxy_port": _free_port(), "hub_port": _free_port(), "proxy_api_port": _free_port()}
    tests_token = secrets.token_hex(16)
    config = BASE_HUB_CONFIG.format(**ports, chp=str(chp), workdir=workdir, token=tests_token)
    config += f"""
c.JupyterHub.custom_scopes = {{"custom:aispike:admin": {{"description": "AISpike admin"}},
                              "custom:aispike:admit": {{"description": "admit spawns"}}}}
c.JupyterHub.services.append({{
    "name": "aispike", "url": "http://127.0.0.1:{port}", "api_token": {token!r},
    "command": {service_cmd!r}, "environment": {{"PYTHONPATH": {str(service_repo)!r}}},
    "oauth_no_confirm": True, "oauth_client_allowed_scopes": ["custom:aispike:admin"]}})
c.JupyterHub.load_roles += [
    {{"name": "aispike", "services": ["aispike"],
      "scopes": ["admin:servers", "list:users", "read:users", "custom:aispike:admit"]}},
    {{"name": "aispike-admins", "services": ["tests"], "users": [{admin!r}],
      "scopes": ["custom:aispike:admin", "access:services!service=aispike"]}},
]
"""
    (workdir / "jupyterhub_config.py").write_text(config)
    log = open(workdir / "jupyterhub.log", "ab")  # noqa: SIM115 (lives as long as the hub)
    proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f",
                             str(workdir / "jupyterhub_config.py")], cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{ports['proxy_port']}/", tests_token


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def pctl(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def fetch(url: str, headers: dict[str, str]) -> tuple[float, int, int]:
    """GET with gzip accepted: (seconds, bytes on the wire, bytes of JSON)."""
    t = time.perf_counter()
    r = requests.get(url, headers={**headers, "Accept-Encoding": "gzip"}, timeout=120,
                     stream=True)
    wire = r.raw.read(decode_content=False)
    elapsed = time.perf_counter() - t
    r.raise_for_status()
    body = gzip.decompress(wire) if r.headers.get("Content-Encoding") == "gzip" else wire
    json.loads(body)
    return elapsed, len(wire), len(body)


TIMING_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const api = res.filter(r => r.name.includes('/api/panel/map'));
  return {document: nav.responseEnd, dom_ready: nav.domContentLoadedEventEnd,
          requests: 1 + res.filter(r => r.transferSize > 0).length,
          cached: res.filter(r => r.transferSize === 0).length,
          bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
          api: api.length ? api[api.length - 1].responseEnd - api[api.length - 1].startTime : 0,
          dom_nodes: document.getElementsByTagName('*').length,
          drawn: (performance.getEntriesByName('aispike-map-drawn').pop() || {}).startTime || 0};
}"""


def run_size(args: argparse.Namespace, n_nodes: int, bin_dir: Path) -> dict[str, Any]:
    """One cluster size: nodes, seeded slices, a hub with the service, then the timings."""
    group = f"b{secrets.token_hex(2)}"
    node_spec = spec(n_nodes, group)
    workdir = Path(tempfile.mkdtemp(prefix="aispike-panel-bench-"))
    (workdir / "nodes.yaml").write_text(yaml.safe_dump(node_spec))
    created: list[str] = []
    t0 = time.perf_counter()
    if not args.no_kube:
        sims = nodes_from_spec(json.loads(json.dumps(node_spec)))
        for start in range(0, len(sims), 250):
            manifests = [m for sim in sims[start:start + 250] for m in node_manifests(sim.node)]
            kubectl(bin_dir, "apply", "-f", "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
        created = [s.node.name for s in sims]
    kube_s = time.perf_counter() - t0
    db = f"sqlite:///{workdir}/aispike.sqlite"
    slices = seed(db, node_spec, args.fill)
    (workdir / "aispike_service_config.py").write_text(f"""
c.AISpikeService.nodes_file = {str(workdir / "nodes.yaml")!r}
c.IdleMonitor.poll_interval = 5
c.AdminPanel.history_interval = 5
c.AdminPanel.nodes_per_view = 20
""")
    port, token, admin = _free_port(), secrets.token_hex(16), "admin"
    cmd = [sys.executable, "-m", "aispike_hub.cli", "service", f"--db-url={db}",
           f"--config={workdir / 'aispike_service_config.py'}"]
    hub, url, tests_token = start_hub(workdir, cmd, port, token, admin, args.service_repo)
    service = f"http://127.0.0.1:{port}/services/aispike/"
    times: dict[str, list[float]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    breakdown: dict[str, list[dict[str, float]]] = {}
    drawn = zoom_dom = 0
    try:
        wait(lambda: requests.get(f"{service}api/health", timeout=2).ok, 120, "the service")
        # ... and the hub behind its proxy (routes are added after the service has started).
        wait(lambda: requests.get(f"{url}hub/health", timeout=2).ok
             and requests.get(f"{url}services/aispike/api/health", timeout=2).ok,
             120, "the hub's proxy")
        from playwright.sync_api import sync_playwright

        headers = {"Authorization": f"token {tests_token}"}
        first_pool = POOLS[0][0]
        for name, path in (("api map, pools (cold: builds)", "panel/map"),
                           ("api map, pools", "panel/map"),
                           ("api map, one pool", f"panel/map?pool={first_pool}"),
                           ("api quotas", "panel/quotas")):
            for _ in range(1 if "cold" in name else args.runs):
                elapsed, wire, body = fetch(f"{service}api/{path}", headers)
                times.setdefault(name, []).append(elapsed)
                sizes[name.split(" (")[0]] = (wire, body)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{url}hub/login?next=%2Fhub%2Fhome")
            page.fill("#username_input", admin)
            page.fill("#password_input", "x")
            page.click("#login_submit")
            page.wait_for_url("**/hub/home")
            for i in range(args.runs + 1):
                t = time.perf_counter()
                page.goto(f"{url}services/aispike/admin/")
                page.wait_for_selector("#aispike-panel[data-loaded='pools']")
                times.setdefault("page: map, pools" + (" (cold)" if i == 0 else ""),
                                 []).append(time.perf_counter() - t)
                if i:
                    breakdown.setdefault("pools", []).append(page.evaluate(TIMING_JS))
            for _ in range(args.runs):
                t = time.perf_counter()
                page.goto(f"{url}services/aispike/admin/?pool={first_pool}")
                page.wait_for_selector("#aispike-panel[data-loaded='nodes'] .node")
                times.setdefault("page: map, one pool zoomed", []).append(
                    time.perf_counter() - t)
                breakdown.setdefault("one pool zoomed", []).append(page.evaluate(TIMING_JS))
            drawn = page.locator(".gpu").count()
            zoom_dom = page.evaluate("document.getElementsByTagName('*').length")
            if args.screenshots:
                screenshots(page, url, args.screenshots, first_pool)
            browser.close()
    finally:
        stop_hub(hub, workdir, created, bin_dir)
    return {"nodes": n_nodes, "slices": slices, "kube_s": kube_s, "created": bool(created),
            "times": times, "sizes": sizes, "breakdown": breakdown, "drawn": drawn,
            "zoom_dom": zoom_dom}


def screenshots(page: Any, url: str, shots: Path, first_pool: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    time.sleep(11)  # a few history samples
    page.goto(f"{url}services/aispike/admin/")
    page.wait_for_selector("#aispike-panel[data-loaded='pools']")
    page.screenshot(path=str(shots / "admin-panel-pools.png"), full_page=True)
    page.goto(f"{url}services/aispike/admin/?pool={first_pool}")
    page.wait_for_selector("#aispike-panel[data-loaded='nodes'] .node")
    page.locator(".seg[data-user]").first.hover()
    page.screenshot(path=str(shots / "admin-panel-map.png"), full_page=True)
    page.goto(f"{url}services/aispike/admin/?pool={first_pool}&colour=owner")
    page.wait_for_selector("#aispike-panel[data-loaded='nodes'] .node")
    page.screenshot(path=str(shots / "admin-panel-map-owners.png"), full_page=True)
    page.goto(f"{url}services/aispike/admin/quotas")
    page.wait_for_selector("#aispike-panel[data-loaded='quotas']")
    page.screenshot(path=str(shots / "admin-panel-quotas.png"), full_page=True)
    page.goto(f"{url}services/aispike/admin/history?")
    page.select_option("#h-hours", "1")
    page.wait_for_selector("#aispike-panel[data-loaded='history']")
    page.screenshot(path=str(shots / "admin-panel-history.png"), full_page=True)


def stop_hub(hub: subprocess.Popen[bytes], workdir: Path, created: list[str],
             bin_dir: Path) -> None:
    hub.send_signal(signal.SIGTERM)
    try:
        hub.wait(timeout=30)
    except subprocess.TimeoutExpired:
        hub.kill()
    pid_file = workdir / "jupyterhub-proxy.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    for start in range(0, len(created), 500):
        chunk = created[start:start + 500]
        subprocess.run([str(bin_dir / "kubectl"), "delete", "node", "--wait=false", *chunk],
                       capture_output=True, check=False, timeout=600)
        subprocess.run([str(bin_dir / "kubectl"), "delete", "resourceslices.resource.k8s.io",
                        "--wait=false", *[resource_slice_name(n) for n in chunk]],
                       capture_output=True, check=False, timeout=600)


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def report(r: dict[str, Any], load: str) -> None:
    gpus = r["nodes"] * 4
    kube = f"created in {r['kube_s']:.0f} s" if r["created"] else "not created"
    print(f"\nadmin panel: {r['nodes']} nodes, {gpus} GPUs in {len(POOLS)} pools, "
          f"{r['slices']} admitted slices; kwok nodes {kube}; zoomed pool draws {r['drawn']} "
          f"GPU bars ({r['zoom_dom']} DOM elements); {load}\n")
    print(f"| {'what':<32} | {'median s':>8} | {'p90 s':>7} | {'max s':>7} | {'n':>3} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 5}|")
    for name, values in r["times"].items():
        print(f"| {name:<32} | {statistics.median(values):8.3f} | {pctl(values, 0.9):7.3f} "
              f"| {max(values):7.3f} | {len(values):3d} |")
    print(f"\n| {'payload':<24} | {'JSON':>10} | {'on the wire':>11} |")
    print(f"|{'-' * 26}|{'-' * 12}|{'-' * 13}|")
    for name, (wire, body) in r["sizes"].items():
        print(f"| {name:<24} | {kib(body):>10} | {kib(wire):>11} |")
    for what, b in r["breakdown"].items():
        med = {k: statistics.median(x[k] for x in b) for k in b[0]}
        print(f"\npage ({what}), medians: document {med['document']:.0f} ms · DOM ready "
              f"{med['dom_ready']:.0f} ms · drawn {med['drawn']:.0f} ms (0: not marked) · "
              f"{med['requests']:.0f} requests over the network ({kib(int(med['bytes']))}), "
              f"{med['cached']:.0f} from the browser's cache · map request {med['api']:.0f} ms "
              f"(0: none) · {med['dom_nodes']:.0f} DOM elements")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", default="1500", help="cluster sizes, comma-separated")
    ap.add_argument("--fill", type=float, default=0.6, help="share of GPU memory held")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-kube", action="store_true",
                    help="do not create the kwok nodes (the service's node list only)")
    ap.add_argument("--service-repo", type=Path, default=REPO,
                    help="run the service from this checkout (to compare with another commit)")
    ap.add_argument("--screenshots", type=Path, help="write PNGs of the pages here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up the nodes on SIGTERM too

    paths = stack_paths()
    bin_dir = Path(paths["bin"])
    if not args.no_kube:
        kubeconfig = Path(os.environ.get("KUBECONFIG") or Path(paths["state_dir"]) / "kubeconfig")
        if not _connect(kubeconfig):
            raise SystemExit(f"no test cluster at {kubeconfig}: scripts/test-cluster up")
        os.environ["KUBECONFIG"] = str(kubeconfig)
    for n in (int(x) for x in args.nodes.split(",")):
        r = run_size(args, n, bin_dir)
        report(r, "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
