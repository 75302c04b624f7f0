"""The AISpike service's view of a Kubernetes cluster: the live inventory, as admission needs it.

The service admits, queues and preempts against what the cluster really holds.  On Kubernetes
that is the same list+watch inventory the hub's placer uses (:mod:`aispike_hub.kube.inventory`:
ResourceSlices of our driver, ResourceClaims, Nodes, Pods), read through the service's
:class:`~aispike_hub.admission.inventory.Inventory` protocol:

- ``nodes()``: the schedulable nodes with their published GPUs;
- ``server_assignments()``: per hub server (``user/server``, from the
  ``aispike.io/hub-server`` annotation the spawner writes on pods and claims), what its claim
  and pod take; admission counts these instead of its own promise once they exist;
- ``foreign_assignments()``: everything else (other workloads' claims and pods).

Nothing is kept here: a restarted service rebuilds all of it from the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aispike_hub.kube.api import kube_api_client
from aispike_hub.kube.inventory import Inventory as KubeInventory
from aispike_hub.model import Assignment, Node
from aispike_hub.placement.state import ClusterState

log = logging.getLogger(__name__)


class KubeClusterInventory:
    """The service's inventory protocol over a started :class:`KubeInventory`."""

    def __init__(self, inventory: KubeInventory) -> None:
        self.inventory = inventory
        self._seen: ClusterState | None = None
        self._nodes: list[Node] = []

    @classmethod
    def start(cls, api_client: Any | None = None, timeout: float = 120,
              **traits: Any) -> KubeClusterInventory:
        """List and watch the cluster (waits until every kind is listed once)."""
        inventory = KubeInventory(api_client if api_client is not None else kube_api_client(),
                                  **traits)
        inventory.start(timeout)
        return cls(inventory)

    def stop(self) -> None:
        self.inventory.stop()

    def nodes(self) -> Sequence[Node]:
        """Schedulable nodes; the same list object until the cluster's topology changes (the
        admin panel keys its cached map on it)."""
        with self.inventory.lock:
            state = self.inventory.state()
            if state is not self._seen:
                self._seen = state
                self._nodes = list(state.nodes) if state is not None else []
            return self._nodes

    @property
    def version(self) -> int:
        """Grows with every change the inventory saw (watch events, re-lists)."""
        return self.inventory.events_seen + self.inventory.relists

    def server_assignments(self) -> Mapping[str, Sequence[Assignment]]:
        return self.inventory.usage_by_server()[0]

    def foreign_assignments(self) -> Sequence[Assignment]:
        return self.inventory.usage_by_server()[1]
