"""``LocalGPUSpawner``: one GPU server without Kubernetes, with the same slices, quotas and form.

JupyterHub's ``LocalProcessSpawner`` runs each notebook server as a local process; this spawner
adds what AISpike adds to a cluster, from the same parts:

1. the options form, ``user_options`` and ``opt-`` query arguments are parsed by
   :mod:`aispike_hub.spawner.form` (a bad value is a 400 naming the field);
2. admission (the AISpike service or the in-process one) admits, queues or refuses with the
   quota core's reasons (:func:`aispike_hub.admission.hub.admit_or_raise`);
3. the placement core places the slice on this machine's GPUs (:class:`PlacementEngine` over a
   :class:`ClusterState` of this machine minus what running servers hold); the service's own
   choice is kept when it still fits, so the admin panel shows where the slice really is;
4. the process gets ``CUDA_VISIBLE_DEVICES`` and the isolation environment of the node agent
   (:func:`aispike_hub.isolation_env.isolation_env`: ``NVIDIA_VISIBLE_DEVICES``,
   ``AISPIKE_GPU_MEMORY_LIMIT(S)``, HAMi-core's and the frameworks' limits) plus the slice
   variables the server extension reads.

The machine's allocation lives in each server's spawner state (``get_state``, kept by the hub in
its database): after a hub restart every running server's slice is loaded back from it
(``load_state``), and a server whose process is gone gives its slice back when the hub clears
its state.  Nothing about the allocation is kept only in memory.

The GPUs are this machine's, read once through the node agent's NVML code
(:func:`aispike_hub.agent.nvml.read_machine`), or an explicit simulated inventory
(``simulated_gpus = "2x A100 80GB"``) for a first look on a machine without GPUs: the form says
so, and the node carries the label ``aispike.io/inventory=simulated`` that the admin panel shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar, cast

from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from jupyterhub.utils import maybe_future
from traitlets import Bool, Float, Integer, List, Unicode, default

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.hub import admit_or_raise, fit_preview, form_choice_within_quota
from aispike_hub.admission.protocol import Admission
from aispike_hub.admission.wire import assignment_from_dict, assignment_to_dict
from aispike_hub.isolation_env import IsolationSettings, assignment_env
from aispike_hub.isolation_env import no_gpu_env as isolation_no_gpu_env
from aispike_hub.model import GIB_IN_MIB, Assignment, Node, SliceRequest
from aispike_hub.placement.engine import POLICY_NAMES, PlacementEngine
from aispike_hub.placement.state import ClusterState
from aispike_hub.spawner.form import (
    FormError,
    FormSettings,
    Options,
    check_server_name,
    parse_options,
    render_form,
    settings_from_config,
    to_request,
)
from aispike_hub.spawner.machine import (
    describe_gpus,
    machine_memory_mib,
    machine_spec,
    node_of_spec,
)
from aispike_hub.spawner.settings import SpawnerFormSettings

"""Node label saying where the GPUs come from: ``nvml`` or ``simulated``."""
STATE_KEY = "aispike_assignment"
"""Key of the server's slice (an assignment document) in its spawner state."""
LOCAL_BACKEND = "local"
"""``AISPIKE_BACKEND`` of servers started by this spawner."""

def slice_env(node: Node, assignment: Assignment, settings: IsolationSettings,
              request: SliceRequest) -> dict[str, str]:
    """The environment of a server holding ``assignment`` on this machine.

    The node agent's isolation variables for the chosen GPUs (the same function its DRA plugin
    writes into CDI specs), ``CUDA_VISIBLE_DEVICES`` (UUIDs, so CUDA's own device order does
    not matter) and the slice variables the server extension and the notebook read
    (:func:`aispike_hub.isolation_env.assignment_env`).
    """
    return assignment_env(node, assignment, settings, request, LOCAL_BACKEND)


def no_gpu_env() -> dict[str, str]:
    """A CPU-only server sees no GPU at all."""
    return isolation_no_gpu_env(LOCAL_BACKEND)


class LocalGPUSpawner(LocalProcessSpawner, SpawnerFormSettings):  # type: ignore[misc]
    """LocalProcessSpawner that gives each server a GPU slice of this machine (see the module
    docstring)."""

    # One machine is smaller than a cluster node: smaller defaults for the shared form limits.
    @default("cpu_default")
    def _default_cpu_default(self) -> float:
        return 1.0

    @default("memory_gib_max")
    def _default_memory_gib_max(self) -> int:
        return 64

    @default("memory_gib_default")
    def _default_memory_gib_default(self) -> int:
        return 2

    simulated_gpus = Unicode(
        "",
        help="""Simulated GPUs instead of this machine's, e.g. "2x A100 80GB" or
        "2x A100 80GB + 1x T4 16GB": for a first look on a machine without GPUs. The form and
        the admin panel say the GPUs are simulated; notebooks get the slice's environment but
        no device. Empty: the GPUs NVML finds (none: CPU-only servers).""",
    ).tag(config=True)

    node_name = Unicode(
        help="This machine's node name in placement, the admin panel and the service.",
    ).tag(config=True)

    @default("node_name")
    def _default_node_name(self) -> str:
        return socket.gethostname().split(".")[0] or "localhost"

    machine_cpus = Float(
        0.0, help="CPUs servers may share (0: this machine's). Servers' CPU requests are placed "
        "against it; LocalProcessSpawner does not enforce them.").tag(config=True)
    machine_memory_gib = Integer(
        0, help="RAM (GiB) servers may share (0: this machine's).").tag(config=True)

    system_users = Bool(
        True,
        help="""Run each server as a system user of its own (system_user_template; needs the
        hub to run as root), as LocalProcessSpawner does. False: run every server as the hub's
        own user with HOME=home_dir_template (demos and tests only: no isolation between users,
        and every notebook can read the hub's files).""",
    ).tag(config=True)
    system_user_template = Unicode(
        "{username}",
        help="""System user a hub user's server runs as when system_users is True ({username}
        is the hub user's name). "jupyter-{username}" keeps hub users apart from the machine's
        own accounts, as The Littlest JupyterHub does.""",
    ).tag(config=True)
    create_system_users = Bool(
        False,
        help="""Create a missing system user (useradd, with a home directory of its own, mode
        0700) before its first server starts. Needs root; with system_users only.""",
    ).tag(config=True)
    hub_only_env = List(
        Unicode(),
        ["CONFIGPROXY_AUTH_TOKEN", "JPY_COOKIE_SECRET", "JUPYTERHUB_CRYPT_KEY"],
        help="""Variables of the hub's own environment that never reach a server, whatever
        env_keep or environment say (the proxy's token, the cookie secret, the crypt key).""",
    ).tag(config=True)
    home_dir_template = Unicode(
        "/tmp/aispike-{username}",
        help="HOME of each server when system_users is False ({username} is expanded).",
    ).tag(config=True)

    placement_policy = Unicode(
        "aispike", help=f"Placement policy on this machine; one of {POLICY_NAMES}.",
    ).tag(config=True)


    hami = Bool(True, help="Set HAMi-core's CUDA_DEVICE_MEMORY_LIMIT_<i> (a hard limit where "
                "libvgpu.so is preloaded).").tag(config=True)
    framework_env = Bool(True, help="Set the frameworks' limits (XLA fraction, "
                         "AISPIKE_FRAMEWORK_LIMITS for the kernel hook).").tag(config=True)
    frameworks = List(Unicode(), ["torch", "tensorflow"],
                      help="Frameworks the kernel hook limits.").tag(config=True)

    _held: ClassVar[dict[str, Assignment]] = {}
    """Per hub process: "user/server" -> the slice its running server holds (from states)."""
    _nodes: ClassVar[dict[tuple[str, str, float, int], Node]] = {}

    _options: Options | None = None
    assignment: Assignment | None = None
    _starting = False

    @default("options_form")
    def _default_options_form(self) -> Any:
        async def render(spawner: LocalGPUSpawner) -> str:
            return await spawner.render_options_form()
        return render

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        def from_form(form_data: dict[str, Any], spawner: LocalGPUSpawner) -> dict[str, Any]:
            options, _ = spawner.parse(form_data)
            return options.as_user_options()
        return from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        def apply(spawner: LocalGPUSpawner, user_options: dict[str, Any]) -> None:
            spawner.apply_options(user_options)
        return apply

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._messages: list[str] = []

    # -- this machine --------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.user.name}/{self.name or ''}"

    @property
    def simulated(self) -> bool:
        return bool(self.simulated_gpus.strip())

    def spec(self) -> dict[str, Any]:
        """This machine as a node spec (what the AISpike service is given as its inventory)."""
        cpu = int((self.machine_cpus or float(os.cpu_count() or 1)) * 1000)
        mem = self.machine_memory_gib * GIB_IN_MIB or machine_memory_mib()
        if self.simulated:
            return machine_spec(self.node_name, cpu, mem, simulated=self.simulated_gpus)
        from aispike_hub.agent.nvml import read_machine

        reading = read_machine(sysfs_root="/sys")
        if not reading.available:
            self.log.warning("no GPUs on this machine (%s): CPU-only servers; set "
                             "LocalGPUSpawner.simulated_gpus for a simulated inventory",
                             "; ".join(reading.problems) or "NVML unavailable")
        return machine_spec(self.node_name, cpu, mem, gpus=reading.core_gpus)

    def node(self) -> Node:
        """This machine (GPUs read once per hub process)."""
        key = (self.node_name, self.simulated_gpus, self.machine_cpus, self.machine_memory_gib)
        node = LocalGPUSpawner._nodes.get(key)
        if node is None:
            node = LocalGPUSpawner._nodes[key] = node_of_spec(self.spec())
        return node

    def machine_state(self) -> ClusterState:
        """This machine minus every running server's slice but this one's."""
        state = ClusterState([self.node()])
        for key, held in LocalGPUSpawner._held.items():
            if key == self.key:
                continue
            try:
                state.commit(held)
            except ValueError as e:
                self.log.warning("ignoring the slice of %s: %s", key, e)
        return state

    @property
    def admission(self) -> Admission:
        cls: Any = self.admission_class
        if issubclass(cls, AdmissionClient):
            return cast(Admission, cls(parent=self))
        return cast(Admission, cls(parent=self, nodes=lambda: [self.node()]))

    # -- options -------------------------------------------------------------------------------
    def form_settings(self) -> FormSettings:
        sizes: dict[str, int] = {}
        for gpu in self.node().gpus:
            sizes[gpu.model] = max(sizes.get(gpu.model, 0), gpu.memory_mib)
        where = "simulated" if self.simulated else "this machine"
        images = [{"name": "local", "image": "local",
                   "description": f"this machine's Python environment ({where})"}]
        return settings_from_config(
            images, {}, sizes,
            max_gpu_gib=self.max_gpu_gib, max_gpus=min(self.max_gpus, len(self.node().gpus)),
            default_gpu_gib=self.default_gpu_gib, allow_cpu_only=self.allow_cpu_only,
            cpu_min=Decimal(str(self.cpu_min)), cpu_max=Decimal(str(self.cpu_max)),
            cpu_default=Decimal(str(self.cpu_default)), memory_gib_min=self.memory_gib_min,
            memory_gib_max=self.memory_gib_max, memory_gib_default=self.memory_gib_default,
        )

    def inventory_note(self) -> str:
        node = self.node()
        if self.simulated:
            return (f"GPUs: {describe_gpus(node)} — simulated (this machine has no such GPUs; "
                    "your server gets the slice's settings but no device).")
        return f"GPUs of {node.name}: {describe_gpus(node)}."

    def parse(self, user_options: Any) -> tuple[Options, FormSettings]:
        settings = self.form_settings()
        check_server_name(self.name or "")
        return parse_options(user_options, settings), settings

    def apply_options(self, user_options: Any) -> None:
        try:
            self._options, _ = self.parse(user_options)
        except FormError as e:
            raise SpawnException(f"Invalid server options: {e}", reason="options",
                                 status_code=400) from None

    async def options_from_query(self, query_data: dict[str, Any]) -> dict[str, Any]:
        options, _ = self.parse(query_data)
        return options.as_user_options()

    async def render_options_form(self) -> str:
        settings = self.form_settings()
        settings, chosen, quota_gib, _ = await form_choice_within_quota(
            self.admission, self.user.name, [g.name for g in self.user.groups],
            self.user_options, settings, self.log)
        note = self.inventory_note()
        preview = fit_preview(self)
        return render_form(settings, chosen=chosen, fit_url=preview.url, fit_token=preview.token,
                           fit_absent=preview.absent, server_name=self.name or "", note=note,
                           quota_gib=quota_gib)

    # -- placement on this machine -------------------------------------------------------------
    def place(self, request: SliceRequest, suggested: Mapping[str, Any] | None = None
              ) -> Assignment:
        """Where ``request`` goes on this machine; the service's suggestion when it still fits.

        Raises ``SpawnException`` with the placement core's reasons when nothing fits.
        """
        from aispike_hub.placement.fit import misfit

        state = self.machine_state()
        if suggested and suggested.get("node") == self.node_name and suggested.get("gpu_indices"):
            chosen = replace(assignment_from_dict(suggested), owner=self.key)
            why = misfit(state, chosen, request)
            if not why:
                return chosen
            self.log.info("the service's choice for %s no longer fits (%s); placing again",
                          self.key, why)
        decision = PlacementEngine(self.placement_policy).place(state, request, self.key)
        if decision.assignment is None:
            raise SpawnException(
                f"No room on {self.node_name} for this server: {'; '.join(decision.reasons)}. "
                "Ask for less, or stop another server.", reason="capacity", status_code=503)
        return decision.assignment

    def hold(self, assignment: Assignment | None) -> None:
        self.assignment = assignment
        if assignment is None:
            LocalGPUSpawner._held.pop(self.key, None)
        else:
            LocalGPUSpawner._held[self.key] = assignment

    # -- start and stop ------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        self.log.info("%s: %s", self._log_name, message)
        self._messages.append(message)

    _start_future: asyncio.Future[Any] | None = None
    _admission_released = False
    """The admission was given back since the last start (nothing owed).  False by default:
    a server restored after a hub restart owes its release too."""

    def start(self) -> asyncio.Future[Any]:
        """The start as a task of its own, so that :meth:`stop` (the hub's start timeout, a
        user's cancel) can cancel it; its cleanup gives everything back."""
        self._messages = []
        self._starting = True
        self._start_future = asyncio.ensure_future(self._start_admitted())
        return self._start_future

    async def _start_admitted(self) -> Any:
        asked = False
        try:
            if self.system_users and self.create_system_users:
                await self.ensure_system_user()
            if self._options is None:
                self.apply_options(self.user_options)
            options, settings = self._options, self.form_settings()
            assert options is not None
            request = to_request(options, settings)
            # From here on every way out but success gives the admission back: a refusal, a
            # cancel while the ticket is queued (the hub's start timeout, the user's cancel),
            # a failure to place or to start the process.
            asked, self._admission_released = True, False
            ticket = await admit_or_raise(
                self.admission, self.user.name, self.name or "",
                [g.name for g in self.user.groups], request, options.describe(), self._say)
            self._request = request
            if request.gpu_count:
                self.hold(self.place(request, ticket.get("assignment")))
                self._say(self.describe_slice())
            return await super().start()
        except BaseException:
            self.hold(None)
            if asked:
                await _to_the_end(self._release_admission())
            raise
        finally:
            self._starting = False
            self._options = None

    def describe_slice(self) -> str:
        a = self.assignment
        if a is None:
            return "No GPU"
        node = self.node()
        models = {g.index: g.model for g in node.gpus}
        gpus = ", ".join(f"GPU {i} ({models.get(i, '?')})" for i in a.gpu_indices)
        sim = " (simulated)" if self.simulated else ""
        if len(a.gpu_indices) == 1:
            return f"Placed {a.gpu_memory_mib[0] // GIB_IN_MIB} GiB on {gpus}{sim}"
        return f"Placed on {gpus}{sim}"

    _request: SliceRequest | None = None

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        if self.assignment is not None:
            settings = IsolationSettings(framework_env=self.framework_env,
                                         frameworks=tuple(self.frameworks), hami=self.hami)
            request = self._request or SliceRequest(
                gpu_count=len(self.assignment.gpu_indices),
                gpu_memory_mib=self.assignment.gpu_memory_mib[0])
            env.update(slice_env(self.node(), self.assignment, settings, request))
        else:
            env.update(no_gpu_env())
        if self.simulated:
            env["AISPIKE_SIMULATED_GPUS"] = self.simulated_gpus
        if self.assignment is not None:
            # Which GPUs those are, for the server extension when it cannot ask NVML (a
            # simulated inventory): the models in the order of AISPIKE_GPU_INDICES.
            models = {g.index: g.model for g in self.node().gpus}
            env.setdefault("AISPIKE_GPU_MODELS", ",".join(
                models.get(i, "") for i in self.assignment.gpu_indices))
        for name in self.hub_only_env:
            env.pop(name, None)
        return env

    async def _release_admission(self) -> None:
        """Give the admission back once (a deferred release is retried by the client)."""
        if self._admission_released:
            return
        self._admission_released = True
        try:
            await self.admission.release(self.user.name, self.name or "")
        except Exception as e:
            self.log.warning("releasing the admission of %s failed: %s", self._log_name, e)

    async def stop(self, now: bool = False) -> None:
        """Stop the process and give the slice and the admission back at once.

        Called while a start is in flight (the hub's start timeout, a user's cancel), the start
        is cancelled first and its own cleanup releases what it took."""
        start = self._start_future
        if start is not None and not start.done() and start is not asyncio.current_task():
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
        await super().stop(now=now)
        self.hold(None)
        await self._release_admission()

    async def run_post_stop_hook(self) -> Any:
        """The hub calls this after every stop, also when it found the server already gone
        (then it skips :meth:`stop`): the slice and the admission are given back here too."""
        self.hold(None)
        await self._release_admission()
        return await maybe_future(super().run_post_stop_hook())

    # -- state: the allocation survives hub restarts -------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.assignment is not None:
            state[STATE_KEY] = assignment_to_dict(self.assignment)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        doc = state.get(STATE_KEY)
        if self.pid and isinstance(doc, Mapping):
            try:
                self.hold(assignment_from_dict(doc))
            except (KeyError, TypeError, ValueError) as e:
                self.log.warning("unreadable slice in the state of %s: %s", self.key, e)

    def clear_state(self) -> None:
        super().clear_state()
        self.hold(None)

    # -- progress ------------------------------------------------------------------------------
    async def progress(self) -> Any:
        """Our steps (admission, queue, placement) while the start runs."""
        sent = 0
        while True:
            for message in self._messages[sent:]:
                sent += 1
                yield {"progress": min(10 * sent, 60), "message": message}
            if not self._starting:
                break
            await asyncio.sleep(0.5)

    # -- whom the server runs as ---------------------------------------------------------------
    @property
    def system_user(self) -> str:
        """The system user this server runs as (with ``system_users``)."""
        return self.system_user_template.format(username=self.user.name)

    _user_lock: ClassVar[asyncio.Lock | None] = None

    async def ensure_system_user(self) -> None:
        """Create :attr:`system_user` when missing (``useradd``), its home private (0700).

        Why here and not at login: a user who never starts a server gets no account.
        """
        name = self.system_user
        if LocalGPUSpawner._user_lock is None:
            LocalGPUSpawner._user_lock = asyncio.Lock()
        async with LocalGPUSpawner._user_lock:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                self.log.info("creating the system user %s for %s", name, self.user.name)
                proc = await asyncio.create_subprocess_exec(
                    "useradd", "--create-home", "--shell", "/bin/bash", "--comment",
                    f"AISpike Hub user {self.user.name}", name,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await proc.communicate()
                if proc.returncode != 0:
                    raise SpawnException(
                        f"Cannot create the system user {name} for {self.user.name}: "
                        f"useradd said {out.decode(errors='replace').strip()!r}",
                        reason="system-user", status_code=500) from None
                entry = pwd.getpwnam(name)
            home = entry.pw_dir
            if home and os.path.isdir(home):
                st = os.stat(home)
                if st.st_uid == entry.pw_uid and st.st_mode & 0o077:
                    os.chmod(home, 0o700)

    @property
    def home_dir(self) -> str:
        return self.home_dir_template.format(username=self.user.name)

    def make_preexec_fn(self, name: str) -> Any:
        if self.system_users:
            return super().make_preexec_fn(self.system_user)
        home = self.home_dir

        def preexec() -> None:
            os.makedirs(home, 0o755, exist_ok=True)
            os.chdir(home)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        if self.system_users:
            entry = pwd.getpwnam(self.system_user)
            env["USER"] = self.system_user
            if entry.pw_dir:
                env["HOME"] = entry.pw_dir
            if entry.pw_shell:
                env["SHELL"] = entry.pw_shell
            return env
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env


async def _to_the_end(work: Any) -> None:
    """Await ``work`` even if the caller is cancelled again meanwhile (a release must go out:
    a second cancel while it is sent would leave the ticket behind)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
