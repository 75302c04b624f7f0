"""Where admission learns the cluster: the :class:`Inventory` protocol and its small adapters.

The controller places requests on the nodes an inventory lists, minus what other workloads
hold.  The service uses the Kubernetes one (:mod:`aispike_hub.service.kube_inventory`) or a
fixed node list (:class:`StaticInventory`); the hub's in-process admission wraps the spawner's
own view of the nodes (:class:`NodesInventory`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aispike_hub.model import Assignment, Node

__all__ = ["Inventory", "NodesInventory", "StaticInventory", "server_assignments"]


class Inventory(Protocol):
    """Where the service learns the cluster (the Kubernetes inventory, a node spec, ...)."""

    def nodes(self) -> Sequence[Node]:
        """Every node that can host notebook servers."""
        ...

    def foreign_assignments(self) -> Sequence[Assignment]:
        """Capacity held by things this service did not admit (other workloads)."""
        ...


def server_assignments(inventory: Inventory) -> Mapping[str, Sequence[Assignment]]:
    """What the cluster itself says each hub server (``user/server``) holds, when the inventory
    can tell (the Kubernetes one reads it from pods and claims); empty otherwise.

    It is optional in the protocol: a fixed node list knows no servers.
    """
    method: Callable[[], Mapping[str, Sequence[Assignment]]] | None = getattr(
        inventory, "server_assignments", None)
    return method() if method is not None else {}


@dataclass
class StaticInventory:
    """A fixed list of nodes (a node spec file, the single-machine demo, tests)."""

    node_list: Sequence[Node]
    held: Sequence[Assignment] = ()

    def nodes(self) -> Sequence[Node]:
        return self.node_list

    def foreign_assignments(self) -> Sequence[Assignment]:
        return self.held


class NodesInventory:
    """The inventory protocol over a callable (the spawner's cluster view, in the hub)."""

    def __init__(self, nodes: Callable[[], Sequence[Node]]) -> None:
        self._nodes = nodes

    def nodes(self) -> Sequence[Node]:
        return self._nodes()

    def foreign_assignments(self) -> Sequence[Assignment]:
        return ()
