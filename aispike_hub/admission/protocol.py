"""The :class:`Admission` protocol: what a spawner needs from admission, wherever it runs.

Two adapters satisfy it with the same calls and the same JSON tickets
(:class:`~aispike_hub.admission.wire.Ticket` as a dict):

- :class:`aispike_hub.admission.client.AdmissionClient`: the AISpike service over REST;
- :class:`aispike_hub.admission.inprocess.InProcessAdmission`: the same controller inside the hub.

``c.AISpikeSpawner.admission_class`` picks one; the spawner only knows this protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

from aispike_hub.model import SliceRequest

__all__ = ["Admission"]


class Admission(Protocol):
    """What the spawner needs from admission (both implementations answer JSON tickets)."""

    async def admit(self, user: str, server: str, groups: Iterable[str],
                    request: SliceRequest) -> dict[str, Any]:
        """Ask for admission: a ticket whose ``state`` is admitted, queued or refused."""
        ...

    async def status(self, user: str, server: str) -> dict[str, Any]:
        """The server's ticket now (``unknown`` when admission never heard of it)."""
        ...

    async def release(self, user: str, server: str) -> bool:
        """The server stopped: give its reservation back; True if there was one."""
        ...

    async def fit(self, user: str, groups: Iterable[str], request: SliceRequest
                  ) -> dict[str, Any]:
        """The options form's preview: would ``request`` be admitted now, and where."""
        ...

    async def place(self, user: str, server: str, prefer_node: str = "",
                    refuted: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        """A fresh place for the admitted server (the hub's placer could not pin the ticket's),
        leaving out the ``refuted`` GPUs ``(node, index)`` the hub's view sees taken:
        ``{"placed", "assignment", "request", "reasons", "state"}``, see
        :meth:`aispike_hub.admission.controller.AdmissionController.place`."""
        ...

    def follow(self, ticket: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the ticket each time it changes while queued, then the final one."""
        ...
