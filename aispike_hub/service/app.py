"""``aispike-hub service``: the AISpike service, a hub-managed JupyterHub service.

The hub starts it (``c.JupyterHub.services``) with its token and URLs in the environment
(``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ...).  It owns the quota policy (seeded from config, edited at
run time, kept in the store), admits and queues spawns, and stops preempted servers through the
hub's REST API.  Every setting is a trait: ``aispike-hub service --help-all`` lists them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from tornado import web
from traitlets import Bool, Dict, Enum, Float, Unicode, default
from traitlets.config import Application

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import Inventory, StaticInventory
from aispike_hub.admission.replace import claimed_request
from aispike_hub.cli import package_version
from aispike_hub.kube.inventory import Inventory as KubeInventoryConfig
from aispike_hub.model import Node
from aispike_hub.placement.engine import POLICY_NAMES, PlacementEngine
from aispike_hub.placement.state import ClusterState
from aispike_hub.quota import PolicyError
from aispike_hub.service import migrations
from aispike_hub.service.api import ServiceContext, handlers
from aispike_hub.service.hubclient import HubAPIError, HubClient
from aispike_hub.service.idle import IdleMonitor, idle_handlers
from aispike_hub.service.migrations import SchemaError
from aispike_hub.service.panel import AdminPanel, panel_handlers
from aispike_hub.service.reconciler import Reconciler
from aispike_hub.service.store import Store


def nodes_from_file(path: str) -> list[Node]:
    """Nodes of a node spec file (the format of tests/fixtures/cluster/gpu-nodes.yaml)."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    from aispike_hub.kube.nodespec import nodes_from_spec

    return [s.node for s in nodes_from_spec(yaml.safe_load(Path(path).read_text()))]


class AISpikeService(Application):
    """The AISpike service: quota policy, admission, queue, preemption, fit preview."""

    name = "aispike-hub service"
    version = package_version()
    description = __doc__ or ""

    config_file = Unicode(
        "aispike_service_config.py",
        help="""Config file to load (traitlets, .py or .json). The default is read when it
        exists; a file named on the command line must exist. A file that cannot be read or
        parsed stops the service with the file and line: it never starts on defaults (no
        quotas, a new database).""",
    ).tag(config=True)

    @default("raise_config_file_errors")
    def _raise_config_file_errors_default(self) -> bool:
        # A broken config file fails the start (traitlets' default only logs it and goes on).
        return True

    db_url = Unicode(
        "sqlite:///aispike_service.sqlite",
        help="""SQLAlchemy URL of the store (policy, reservations, notices, audit log).
        sqlite for one hub; PostgreSQL in production, e.g.
        postgresql+psycopg://aispike:PASSWORD@db:5432/aispike.""",
    ).tag(config=True)

    upgrade_db = Bool(
        False,
        help="""Upgrade the store's schema at start when it is behind this version (a sqlite
        file is copied first), like ``jupyterhub --upgrade-db``.  Default: a database behind
        refuses the start and names the command, ``aispike-hub service upgrade-db``.""",
    ).tag(config=True)

    policy = Dict(
        help="""Quota and priority policy that seeds an empty store (see docs/quotas.md):
        {"defaults": {...}, "groups": {name: {"member": {...}, "quota": {...},
        "borrowing": {...}}}, "users": {name: {...}}, "tiers": [...], "default_tier": ...,
        "group_combine": "most_generous"}. Once stored, the store is the truth (admins edit it
        through the REST API); set reset_policy to load this again.""",
    ).tag(config=True)

    reset_policy = Bool(
        False,
        help="Replace the stored policy with the configured one at start (audited).",
    ).tag(config=True)

    nodes_file = Unicode(
        "",
        help="""Node spec file (YAML) describing the cluster, for hubs without the Kubernetes
        inventory (one machine, tests). Format: docs/test-stack.md, 'Node spec'.""",
    ).tag(config=True)

    inventory = Enum(
        ["auto", "kubernetes", "file"],
        "auto",
        help="""Where the service learns the cluster. 'kubernetes': list and watch the
        ResourceSlices of our DRA driver, ResourceClaims, Nodes and Pods (in-cluster service
        account, else $KUBECONFIG); the service then counts what each hub server really holds
        and every other workload's claims and pods. 'file': nodes_file (one machine, tests).
        'auto': 'file' when nodes_file is set, else 'kubernetes'.""",
    ).tag(config=True)

    inventory_timeout = Float(
        120.0,
        help="Seconds to wait at start for the Kubernetes inventory's first full listing.",
    ).tag(config=True)

    placement_policy = Unicode(
        "aispike",
        help=f"Placement policy for admission and the fit preview; one of {POLICY_NAMES}.",
    ).tag(config=True)

    queue_timeout = Float(
        600.0,
        help="Seconds a spawn may wait in the queue before it gives up (the user is told).",
    ).tag(config=True)

    preemption_grace = Float(
        30.0,
        help="""Seconds between warning a preempted server's user and stopping the server
        through the hub.""",
    ).tag(config=True)

    strict_fifo = Bool(
        False,
        help="""Queue strictly in order: when the first request does not fit, nothing behind it
        starts. Default: a later request that fits may start (best effort, like Kueue's
        BestEffortFIFO); tier order always holds.""",
    ).tag(config=True)

    tick_interval = Float(
        2.0,
        help="Seconds between queue re-checks (deadlines, grace periods, freed capacity).",
    ).tag(config=True)

    bind_url = Unicode(help="URL to listen on; default $JUPYTERHUB_SERVICE_URL.").tag(config=True)

    @default("bind_url")
    def _bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101/")

    service_prefix = Unicode(
        help="URL prefix of the service; default $JUPYTERHUB_SERVICE_PREFIX."
    ).tag(config=True)

    @default("service_prefix")
    def _service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/aispike/")

    service_name = Unicode(help="This service's name in the hub; default "
                           "$JUPYTERHUB_SERVICE_NAME.").tag(config=True)

    @default("service_name")
    def _service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", "aispike")

    hub_api_url = Unicode(help="The hub's REST API; default $JUPYTERHUB_API_URL.").tag(
        config=True)

    @default("hub_api_url")
    def _hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    api_token = Unicode(
        help="""Token for the hub's API (stopping preempted servers needs admin:servers);
        default $JUPYTERHUB_API_TOKEN."""
    ).tag(config=True)

    @default("api_token")
    def _api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    aliases = {  # noqa: RUF012 (traitlets reads this class attribute)
        "db-url": "AISpikeService.db_url",
        "nodes-file": "AISpikeService.nodes_file",
        "inventory": "AISpikeService.inventory",
        "config": "AISpikeService.config_file",
    }

    classes = [IdleMonitor, AdminPanel, KubeInventoryConfig, Reconciler]  # noqa: RUF012 (traitlets reads this class attribute)

    controller: AdmissionController
    ctx: ServiceContext
    idle: IdleMonitor
    hub: HubClient
    panel: AdminPanel | None = None
    reconciler: Reconciler
    _inventory: Inventory | None = None

    def make_inventory(self) -> Inventory:
        """The cluster view of :attr:`inventory` (made once)."""
        if self._inventory is not None:
            return self._inventory
        source = self.inventory
        if source == "auto":
            source = "file" if self.nodes_file else "kubernetes"
        if source == "file":
            if not self.nodes_file:
                raise SystemExit("aispike-hub service: AISpikeService.inventory is 'file' but "
                                 "AISpikeService.nodes_file is not set")
            self._inventory = StaticInventory(nodes_from_file(self.nodes_file))
        else:
            from aispike_hub.service.kube_inventory import KubeClusterInventory

            self.log.info("listing the Kubernetes inventory (slices, claims, nodes, pods)")
            try:
                kube = KubeClusterInventory.start(timeout=self.inventory_timeout,
                                                  parent=self)
            except Exception as e:
                raise SystemExit(f"aispike-hub service: cannot read the Kubernetes inventory "
                                 f"(AISpikeService.inventory={self.inventory!r}): {e}") from e
            self.log.info("Kubernetes inventory: %d schedulable nodes", len(kube.nodes()))
            self._inventory = kube
        return self._inventory

    def load_settings(self, argv: list[str] | None = None) -> None:
        """The command line, then the config file (the command line wins over the file)."""
        self.parse_command_line(argv)
        named = "config_file" in self.config.get("AISpikeService", {})
        if named and not Path(self.config_file).is_file():
            raise ConfigFileError(f"{self.config_file}: no such config file")
        if self.config_file and Path(self.config_file).exists():
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)

    def open_store(self) -> Store:
        """The store, its schema current (or upgraded with ``upgrade_db``); raises
        :class:`DatabaseError` naming the database and what to do."""
        try:
            store = Store(self.db_url, upgrade=self.upgrade_db)
        except SchemaError as e:
            raise DatabaseError(f"database {safe_url(self.db_url)}: {e}") from None
        except SQLAlchemyError as e:
            raise DatabaseError(f"cannot use the database {safe_url(self.db_url)}: "
                                f"{str(getattr(e, 'orig', None) or e).strip()}") from None
        if store.upgraded is not None:
            before, after, backup = store.upgraded
            self.log.warning("upgraded the database from revision %s to %s%s", before, after,
                             f" (backup: {backup})" if backup else "")
        return store

    def initialize(self, argv: list[str] | None = None) -> None:
        self.load_settings(argv)
        store = self.open_store()
        policy = AdmissionController.load_policy(store, self.policy)
        if self.reset_policy and self.policy:
            controller = AdmissionController(store, self.make_inventory(), policy)
            controller.set_policy(self.policy, "config", "policy (reset_policy)")
            policy = controller.policy
        self.controller = AdmissionController(
            store, self.make_inventory(), policy,
            engine=PlacementEngine(self.placement_policy),
            queue_timeout=self.queue_timeout, preemption_grace=self.preemption_grace,
            strict_fifo=self.strict_fifo,
            # On Kubernetes, place what the hub's claims will hold (memory in whole GiB), so the
            # hub's placer pins the ticket's assignment as it is (docs/architecture.md).
            rounding=None if isinstance(self._inventory, StaticInventory) else claimed_request,
        )
        self.idle = IdleMonitor(store, self.hub_api_url, self.api_token, parent=self)
        self.hub = self.idle.hub  # one hub client: the monitor's timeouts and concurrency
        # admission decides on the event loop: solve the placement LP before the first request
        self.controller.engine.prepare(ClusterState(list(self.controller.inventory.nodes())))

    def make_app(self) -> web.Application:
        self.ctx = ServiceContext(self.controller, self.service_name)
        kube = getattr(self._inventory, "inventory", None)  # the Kubernetes inventory, if any
        self.reconciler = Reconciler(self.ctx, self.hub, kube, parent=self)
        prefix = self.service_prefix
        routes: list[Any] = [(rf"{prefix.rstrip('/')}/oauth_callback", HubOAuthCallbackHandler)]
        routes += handlers(prefix, self.ctx)
        routes += idle_handlers(prefix, self.ctx, self.idle)
        panel = AdminPanel(self.ctx, self.idle, prefix, parent=self)
        panel.reconciler = self.reconciler
        if panel.enabled:
            self.panel = panel
            routes += panel_handlers(panel)
        return web.Application(routes, cookie_secret=os.urandom(32), xsrf_cookies=False)

    async def stop_server(self, user: str, server: str) -> bool:
        """Stop a preempted server through the hub; True once the hub stopped it, is stopping
        it or has no such server (:meth:`.HubClient.stop_server`); False (logged) when the hub
        refused or did not answer: the next tick tries again."""
        try:
            await self.hub.stop_server(user, server)
        except HubAPIError as e:
            self.log.warning("stopping %s/%s for preemption failed: %s", user, server, e)
            return False
        return True

    async def tick(self) -> None:
        """Re-check the queue; stop servers whose preemption grace is over."""
        async with self.ctx.lock:
            self.controller.process()
            due = self.controller.due_preemptions()
        for user, server, reason in due:
            self.log.info("preempting %s/%s: %s", user, server, reason)
            if await self.stop_server(user, server):
                async with self.ctx.lock:
                    self.controller.preempted(user, server, reason, "aispike")

    async def run(self) -> None:
        app = self.make_app()
        if self.reconciler.enabled:
            # Before anything is admitted: tickets the hub no longer runs (a shutdown's failed
            # releases) and orphaned claims go first.
            try:
                await self.reconciler.run_once("start")
            except Exception:
                self.log.exception("reconciliation at start failed; the loop retries")
        url = urlparse(self.bind_url)
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("AISpike service on %s (prefix %s, store %s)", self.bind_url,
                      self.service_prefix, self.db_url.split("@")[-1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        idle = asyncio.ensure_future(self.idle.run(stop)) if self.idle.enabled else None
        history = asyncio.ensure_future(self.panel.run(stop)) if self.panel else None
        reconcile = (asyncio.ensure_future(self.reconciler.run(stop))
                     if self.reconciler.enabled else None)
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                self.log.exception("queue tick failed")
            self.ctx.wakeup.clear()
            waiters = [asyncio.ensure_future(stop.wait()),
                       asyncio.ensure_future(self.ctx.wakeup.wait())]
            await asyncio.wait(waiters, timeout=self.tick_interval,
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if self.ctx.wakeup.is_set():  # a release or policy change: reconcile soon
                self.reconciler.poke()
        if reconcile is not None:
            await reconcile
        if idle is not None:
            await idle
        if history is not None:
            await history
        self.controller.store.close()
        stop_inventory = getattr(self._inventory, "stop", None)
        if stop_inventory is not None:
            stop_inventory()

    def start(self) -> None:
        asyncio.run(self.run())


class ConfigFileError(ValueError):
    """The service's config file is missing or broken: the service does not start."""


class DatabaseError(RuntimeError):
    """The store cannot be used (unreachable, or its schema is not this version's): the
    service does not start."""


def safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def upgrade_db(argv: list[str]) -> None:
    """``aispike-hub service upgrade-db [--config=...] [--db-url=...]``: back up a sqlite
    file, then bring the store's schema to this version (exit 1 with the reason on failure)."""
    app = AISpikeService()
    try:
        app.load_settings(argv)
        app.upgrade_db = True
        store = app.open_store()
    except (ConfigFileError, DatabaseError, SyntaxError, json.JSONDecodeError) as e:
        print(f"aispike-hub service upgrade-db: {config_failure(e)}", file=sys.stderr)
        raise SystemExit(1) from None
    store.close()
    if store.upgraded is None:
        print(f"{safe_url(app.db_url)}: already at revision {migrations.head()}")
        return
    before, after, backup = store.upgraded
    print(f"{safe_url(app.db_url)}: upgraded from revision {before} to {after}"
          + (f"; backup {backup}" if backup else ""))


def config_failure(e: BaseException) -> str:
    """One line naming the file and line of a config error (a Python or JSON config file) or
    the policy field, for a service that refuses to start."""
    if isinstance(e, SyntaxError):
        return f"{e.filename}:{e.lineno}: {e.msg}"
    if isinstance(e, json.JSONDecodeError):
        return f"line {e.lineno}, column {e.colno}: {e.msg}"
    if isinstance(e, PolicyError):
        return f"policy: {e}"
    if isinstance(e, (ConfigFileError, DatabaseError)):
        return str(e)
    tb = e.__traceback__
    where = ""
    while tb is not None:  # the deepest frame in a config file (*.py run by traitlets)
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".py") and "aispike_hub" not in name and "traitlets" not in name:
            where = f"{name}:{tb.tb_lineno}: "
        tb = tb.tb_next
    return f"{where}{type(e).__name__}: {e}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``aispike-hub service``: a config that cannot be used stops it (exit 1)
    with the file and line, never a start on defaults."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if args[:1] == ["upgrade-db"]:
        upgrade_db(args[1:])
        return
    app = AISpikeService()
    try:
        app.initialize(args if argv is not None else None)
    except (ConfigFileError, DatabaseError, SyntaxError, json.JSONDecodeError, PolicyError) as e:
        print(f"aispike-hub service: cannot start: {config_failure(e)}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as e:
        if not _from_config_file(e):
            raise
        print(f"aispike-hub service: cannot start: {config_failure(e)}", file=sys.stderr)
        raise SystemExit(1) from None
    app.start()


def _from_config_file(e: BaseException) -> bool:
    """Whether ``e`` was raised while running a Python config file (traitlets' loader)."""
    tb = e.__traceback__
    while tb is not None:
        if "traitlets/config/loader" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
