"""The in-process adapter of admission: the service's controller inside the hub.

:class:`InProcessAdmission` answers the calls of :class:`~aispike_hub.admission.protocol.Admission`
with the same :class:`~aispike_hub.admission.controller.AdmissionController` the AISpike service
runs (quota core, placement core, queue), over a store of its own, so a hub without the service
admits exactly as one with it.  ``c.AISpikeSpawner.admission_class`` picks it instead of
:class:`~aispike_hub.admission.client.AdmissionClient`; switching changes one class.

Use it for a hub without the service (one machine, a small cluster): it has no preemption
through the hub and no admin API (set the policy in config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from traitlets import Bool, Dict, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from aispike_hub.admission.client import AdmissionClient
from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import NodesInventory
from aispike_hub.admission.replace import claimed_request
from aispike_hub.model import Node, SliceRequest
from aispike_hub.placement.engine import PlacementEngine
from aispike_hub.quota import User
from aispike_hub.service.store import Store

__all__ = ["InProcessAdmission"]


class InProcessAdmission(LoggingConfigurable):
    """Admission inside the hub: the service's controller without the service.

    One controller per ``db_url`` in the hub process, shared by every spawner.
    """

    db_url = Unicode(
        "sqlite:///aispike_admission.sqlite",
        help="""SQLAlchemy URL of the in-process admission store (reservations, audit);
        relative sqlite paths are in the hub's working directory.""",
    ).tag(config=True)

    policy = Dict(
        help="""Quota and priority policy (the format of AISpikeService.policy, see
        docs/quotas.md). Loaded at hub start; the in-process admission has no edit API.""",
    ).tag(config=True)

    placement_policy = Unicode(
        "aispike", help="Placement policy of the admission view (see aispike-hub simulate)."
    ).tag(config=True)

    queue_timeout = Float(
        600.0, help="Seconds a spawn may wait in the queue before it gives up."
    ).tag(config=True)

    poll_interval = Float(1.0, help="Seconds between checks of a queued admission.").tag(
        config=True)

    round_like_claims = Bool(
        help="""Place requests rounded as the DRA driver allocates them (memory slices up to
        whole GiB), so the hub's placer pins admission's decision as it is.  Default: whether
        the spawner that asks uses claims (AISpikeSpawner with the 'aispike' backend).""",
    ).tag(config=True)

    @default("round_like_claims")
    def _round_like_claims(self) -> bool:
        try:
            backend = getattr(self.parent, "gpu_backend", None)
        except Exception:  # a spawner whose backend setting is invalid refuses its start itself
            return False
        return bool(getattr(backend, "uses_claims", False))

    _controllers: ClassVar[dict[str, AdmissionController]] = {}

    def __init__(self, nodes: Callable[[], Sequence[Node]] | None = None, **kwargs: Any
                 ) -> None:
        super().__init__(**kwargs)
        self._nodes = nodes or (lambda: ())

    @property
    def controller(self) -> AdmissionController:
        found = self._controllers.get(self.db_url)
        if found is None:
            store = Store(self.db_url)
            policy = AdmissionController.load_policy(store, self.policy)
            found = AdmissionController(
                store, NodesInventory(self._nodes), policy,
                engine=PlacementEngine(self.placement_policy), queue_timeout=self.queue_timeout,
                preemption_grace=0.0)
            self._controllers[self.db_url] = found
        else:
            found.inventory = NodesInventory(self._nodes)  # the newest view of the cluster
        found.rounding = claimed_request if self.round_like_claims else None
        return found

    async def admit(self, user: str, server: str, groups: Iterable[str],
                    request: SliceRequest) -> dict[str, Any]:
        return self.controller.admit(User(user, frozenset(groups)), server, request,
                                     "hub").as_dict()

    async def status(self, user: str, server: str) -> dict[str, Any]:
        self.controller.process()
        return self.controller.status(user, server).as_dict()

    async def release(self, user: str, server: str) -> bool:
        return self.controller.release(user, server, "hub")

    async def fit(self, user: str, groups: Iterable[str], request: SliceRequest
                  ) -> dict[str, Any]:
        return self.controller.fit(User(user, frozenset(groups)), request)

    async def place(self, user: str, server: str, prefer_node: str = "",
                    refuted: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        return self.controller.place(user, server, "hub", prefer_node, refuted)

    follow = AdmissionClient.follow
    """Yield the ticket each time it changes while queued, then the final one."""
