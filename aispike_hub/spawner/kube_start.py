"""The async start driver of :class:`aispike_hub.spawner.kube.AISpikeSpawner`, and its undo.

Why its own module: ``kube.py`` holds the spawner's settings (traitlets, configured by the
class name ``AISpikeSpawner``), its cluster view and how a start's pod is prepared; this module
holds what runs once the pod is prepared: pinning the GPU (native backend), driving
:func:`aispike_hub.kube.startflow.step` while KubeSpawner creates the pod (adopt, re-pin, give
up on an unschedulable pod), undoing a failed start (pod, claim, admission) and a ``stop`` that
arrives while a start is in flight.  :class:`KubeStartMixin` is a ``KubeSpawner`` subclass with
no traits of its own; ``AISpikeSpawner`` inherits it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from jupyterhub.spawner import SpawnException
from kubernetes.client.exceptions import ApiException as SyncApiException
from kubespawner import KubeSpawner

from aispike_hub.kube.api import error_text
from aispike_hub.kube.inventory import parse_pod
from aispike_hub.model import SliceRequest
from aispike_hub.spawner.form import Options

_INSIDE_START: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "aispike_inside_start", default=None)
"""The token of the start whose code (or a task it made) runs now; ``None`` outside any start.

Why a context variable and not ``asyncio.current_task()``: KubeSpawner's retry after a 409 calls
``self.stop()`` from a task of its own (JupyterHub's ``exponential_backoff`` runs each try through
``maybe_future``, which wraps the coroutine in a new task).  Tasks inherit the context of the code
that made them, so every task of a start sees its token, and nothing outside the start does."""


class KubeStartMixin(KubeSpawner):  # type: ignore[misc]
    """Pin, create, wait, re-pin and undo: the second half of ``AISpikeSpawner.start``.

    Uses the spawner's ``placer()``, ``gpu_backend``, ``admission``, ``_say`` and its start
    state (``_pin``, ``_adopted_uid``, ``_kube_start``, ``_start_future``).
    """

    _pin: Any = None
    """The server's :class:`aispike_hub.kube.placer.Pin` (native backend) once pinned."""
    _adopted_uid = ""
    _kube_start: asyncio.Future[Any] | None = None
    """KubeSpawner's own start (creates the pod and waits for it) while ours is in flight."""
    _start_token: object | None = None
    """This spawner's current start (:data:`_INSIDE_START` holds it inside that start)."""

    def _enter_start(self) -> None:
        """Mark the running task (and every task it makes from now on) as inside this start;
        call first thing in the start's own task."""
        self._start_token = object()
        _INSIDE_START.set(self._start_token)

    def _inside_own_start(self) -> bool:
        """Whether the caller runs inside this spawner's start now in flight."""
        start = self._start_future
        return (start is not None and not start.done() and self._start_token is not None
                and _INSIDE_START.get() is self._start_token)

    # -- start -------------------------------------------------------------------------------
    async def _pin_gpu(self, options: Options, request: SliceRequest,
                       ticket: dict[str, Any]) -> None:
        from aispike_hub.admission.wire import assignment_from_dict
        from aispike_hub.kube.placer import PlacementRefused

        placer = await self.placer()
        prefer = None
        if ticket.get("assignment"):
            try:
                prefer = assignment_from_dict(ticket["assignment"])
            except (KeyError, TypeError, ValueError):
                self.log.warning("%s: ignoring a malformed admission assignment %r",
                                 self._log_name, ticket["assignment"])
        try:
            self._pin = await _to_thread_to_the_end(
                functools.partial(placer.pin, self.namespace, self.pod_name, request,
                                  hub_server=self._hub_server(), prefer=prefer,
                                  wait_gone=self.leftover_timeout,
                                  ask=self._admission_asker()))
        except PlacementRefused as e:
            raise SpawnException(
                f"Cannot start {options.describe()}: {'; '.join(e.reasons)}",
                reason="capacity", status_code=503) from None
        except SyncApiException as e:
            if e.status != 403:
                raise
            raise SpawnException(
                f"Kubernetes refused the GPU claim of {options.describe()}: "
                f"{error_text(e)}", reason="quota", status_code=403) from None
        self._say(self._pin.describe())

    async def _create_and_wait(self, options: Options, request: SliceRequest,
                               ticket: dict[str, Any]) -> Any:
        """Pin (native), create the pod and wait: a thin driver of
        :func:`aispike_hub.kube.startflow.step`, KubeSpawner creating the pod and waiting for it
        to run while this loop adopts and re-pins the claim and gives up on a pod that stays
        unschedulable for ``unschedulable_timeout`` seconds."""
        from aispike_hub.kube.startflow import Action, Flow, Observation, Rules, step

        flow = Flow(pins=self.gpu_backend.uses_claims and request.gpu_count > 0)
        rules = Rules(unschedulable_timeout=self.unschedulable_timeout)
        seen = Observation()
        started: asyncio.Future[Any] | None = None
        told = ""
        try:
            while True:
                s = step(flow, seen, rules)
                flow = s.flow
                if s.action is Action.PIN:
                    await self._clear_leftovers()
                    await self._pin_gpu(options, request, ticket)
                elif s.action is Action.CREATE_POD:
                    started = self._kube_start = asyncio.ensure_future(KubeSpawner._start(self))
                elif s.action is Action.ADOPT:
                    await self._adopt(seen.pod_uid)
                elif s.action is Action.REPIN:
                    self._say(f"The chosen GPU is taken ({s.reason}); placing again")
                    if await self._repin(options, request, s.reason):
                        flow = flow.repinned()
                        seen = Observation()  # a fresh pin: look again
                    else:
                        seen = replace(seen, claim=None)
                elif s.action is Action.DONE:
                    assert started is not None
                    return await self._started_url(started, options)
                elif s.action is Action.GIVE_UP:
                    raise SpawnException(
                        f"Kubernetes cannot place {options.describe()}: {s.reason}. Ask for "
                        "less, or try again later.", reason="unschedulable", status_code=503)
                else:  # Action.WAIT
                    if s.reason and s.reason != told:
                        told = s.reason
                        self._say(f"Waiting for a node: {s.reason}")
                    assert started is not None
                    seen = await self._observe(started, flow.pins)
        finally:
            if started is not None and not started.done():
                started.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await started

    leftover_timeout = 60.0
    """Seconds to wait for a leftover claim of this server to be gone before pinning anew."""

    async def _clear_leftovers(self) -> None:
        """Delete a pod and a claim of this server left from an earlier start, before pinning.

        Why: a server whose old pod still exists (the hub lost track of it: a crash, a pod that
        ended by itself) would have KubeSpawner delete and re-create the pod *after* the pin;
        a re-used claim owned by the old pod is then garbage-collected with it and the new pod
        fails with ``resourceclaims "...-gpu" not found``.  So the old pod goes first, then
        the old claim, and the new pod gets a claim of its own (owned by it once it exists).
        """
        from aispike_hub.kube.claims import claim_name

        await self._start_watching_pods()
        reflector = self.pod_reflector
        old_pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None
        placer = await self.placer()
        claim = placer.inventory.claim(self.namespace, claim_name(self.pod_name))
        if old_pod is None and claim is None:
            return
        if old_pod is not None:
            self._say("An earlier pod of this server still exists: deleting it first, so "
                      "the new pod gets a GPU claim of its own")
            await KubeSpawner.stop(self, now=True)
        await _to_thread_to_the_end(
            functools.partial(placer.release, self.namespace, self.pod_name))

    async def _observe(self, started: asyncio.Future[Any], pins: bool) -> Any:
        """What the start loop sees after half a second (or once KubeSpawner's start ends):
        the pod from KubeSpawner's reflector, the placer's judgement of the pin (native)."""
        from aispike_hub.kube.startflow import Observation

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(started), 0.5)
        reflector = self.pod_reflector
        pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None
        uid = str((pod.get("metadata") or {}).get("uid", "")) if pod is not None else ""
        if started.done():
            # A start that failed is not adopted: its error is what the caller must see.
            failed = started.cancelled() or started.exception() is not None
            return Observation(pod_uid="" if failed else uid, running=True)
        if pod is None:
            return Observation()
        claim = None
        if pins and self._pin is not None:
            placer = await self.placer()
            claim = await asyncio.to_thread(placer.status, self.namespace, self.pod_name)
        return Observation(pod_uid=uid, claim=claim, unschedulable=parse_pod(pod).unschedulable,
                           now=time.monotonic())

    async def _started_url(self, started: asyncio.Future[Any], options: Options) -> Any:
        """KubeSpawner's start result; a 403 from a ResourceQuota as a ``SpawnException``."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await started
        except ApiException as e:
            if e.status == 403:
                raise SpawnException(
                    f"Kubernetes refused {options.describe()}: {_api_message(e)}",
                    reason="quota", status_code=403) from None
            raise

    async def _repin(self, options: Options, request: SliceRequest, reason: str) -> bool:
        """Re-pin the stale claim; True when a fresh pin was made."""
        from aispike_hub.kube.placer import PlacementFailed, PlacementRefused

        placer = await self.placer()
        try:
            new = await _to_thread_to_the_end(
                functools.partial(placer.repin, self.namespace, self.pod_name, reason, request,
                                  ask=self._admission_asker()))
        except (PlacementFailed, PlacementRefused) as e:
            raise SpawnException(f"Cannot start {options.describe()}: {e}",
                                 reason="unschedulable", status_code=503) from None
        if new is None:
            return False
        self._pin = new
        self._say(new.describe())
        return True

    ask_admission_timeout = 900.0
    """Seconds a pin waits for admission's re-decision (the REST client's own timeouts and
    ``when_unavailable`` wait come first; this only bounds a hub loop that stopped answering)."""

    def _admission_asker(self) -> Callable[[str], dict[str, Any]]:
        """The placer's ``ask`` (:data:`aispike_hub.kube.placer.AskAdmission`) for this server:
        admission's ``place`` (the service's ``POST api/place`` or the in-process controller),
        run on the hub's event loop from the placer's thread.

        Fail closed: when admission cannot answer (the service is unreachable, it refuses the
        call), the pin is refused with that reason and the start fails; the placer never falls
        back to a decision of its own that could ignore the queue's promises or the user's
        GPU models.
        """
        from aispike_hub.admission.client import AdmissionError
        from aispike_hub.kube.placer import PlacementRefused

        loop = asyncio.get_running_loop()
        admission = self.admission
        user, server, timeout = self.user.name, self.name or "", self.ask_admission_timeout

        def ask(prefer_node: str, refuted: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
            future = asyncio.run_coroutine_threadsafe(
                admission.place(user, server, prefer_node, refuted), loop)
            try:
                answer: dict[str, Any] = future.result(timeout=timeout)
            except AdmissionError as e:
                raise PlacementRefused(
                    (f"admission could not place the server again: {e.message}",)) from None
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise PlacementRefused((f"admission did not place the server again within "
                                        f"{timeout:g} s",)) from None
            return answer

        return ask

    async def _adopt(self, uid: str) -> None:
        """Make the server's claim owned by its pod ``uid`` (deleted with it), once per pod."""
        if uid and uid != self._adopted_uid and self._pin is not None:
            placer = await self.placer()
            await asyncio.to_thread(placer.adopt, self._pin, self.pod_name, uid)
            self._adopted_uid = uid

    async def _disown(self) -> None:
        """Before an old pod of this start is deleted from inside it: the claim it owns must
        outlive it (the next pod adopts it)."""
        if self._adopted_uid and self._pin is not None:
            placer = await self.placer()
            await asyncio.to_thread(placer.disown, self._pin)
            self._adopted_uid = ""

    async def _abandon(self) -> None:
        """Undo a failed start: the pod (if any), the claim, whatever the placer holds."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(KubeSpawner.stop(self, now=True), 60)
        await self._release_claim()

    async def _release_claim(self) -> None:
        placer = self._shared.get("placer")
        if self.gpu_backend.uses_claims and placer is not None:
            try:
                await asyncio.to_thread(placer.release, self.namespace, self.pod_name)
            except Exception as e:
                self.log.warning("releasing the GPU claim of %s failed: %s", self._log_name, e)
        self._pin = None

    async def _release_admission(self) -> None:
        """Give the admission back; sent to the end even if the caller is cancelled again
        (a deferred release is retried by the REST client)."""
        try:
            await _to_the_end(self.admission.release(self.user.name, self.name or ""))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.warning("releasing the admission of %s failed: %s", self._log_name, e)

    async def stop(self, now: bool = False) -> None:
        """Delete the pod, release the claim and the admission at once.

        Called while a start is in flight (a cancel, the hub's start timeout), the start is
        cancelled first and its own cleanup runs; called from inside the start (KubeSpawner's
        retry after a 409 deleting an old pod of this server, or its cleanup), only the pod goes,
        as KubeSpawner's stop does: the start goes on, and keeps its ticket and claim (cancelling
        it from a task it waits for would deadlock, and releasing would leave the new pod
        without its GPU); the claim is taken out of the old pod's ownership first, or the
        garbage collector would delete it with that pod.  "Inside" is :data:`_INSIDE_START`,
        which the tasks KubeSpawner makes inherit.
        """
        if self._inside_own_start():
            await self._disown()
            await super().stop(now=now)
            return
        start = self._start_future
        in_flight = start is not None and not start.done()
        if in_flight:
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
        await super().stop(now=now)
        await self._release_claim()
        await self._release_admission()
        self._released_by_stop = True

    _released_by_stop = False

    async def run_post_stop_hook(self) -> Any:
        """The hub calls this after every stop, also when it found the server already gone
        (a pod that ended or was deleted: then it skips :meth:`stop`): the claim and the
        admission are given back here too, so a server that died never keeps its ticket."""
        from jupyterhub.utils import maybe_future

        if not self._released_by_stop:
            await self._release_claim()
            await self._release_admission()
        self._released_by_stop = False
        return await maybe_future(super().run_post_stop_hook())


async def _to_thread_to_the_end(call: Callable[[], Any]) -> Any:
    """``call()`` in a thread; cancelled, wait for the thread all the same, then re-raise.

    A thread cannot be stopped: a pin or re-pin cancelled halfway would create its claim after
    the start's cleanup ran, and the claim would outlive the start.  Waiting for it lets the
    cleanup see (and delete) what it made.
    """
    task = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _to_the_end(work: Any) -> Any:
    """Await ``work`` even if the caller is cancelled meanwhile: a release must go out (a
    second cancel while it is sent would leave the ticket behind); then re-raise the cancel."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _api_message(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message", e.reason))
    except (TypeError, ValueError):
        return str(e.reason)
