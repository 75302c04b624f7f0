"""A minimal KubeSpawner that asks the AISpike service for admission (tests only).

The real AISpikeSpawner (issue 5) will do the same through ``aispike_hub.service.client``; this
is just enough of it to exercise quotas, the queue and preemption through a real hub: admit
before creating the pod (refused -> SpawnException with the reasons; queued -> progress messages
until admitted), pin the pod to the node the service chose, release when the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from jupyterhub.spawner import SpawnException
from kubespawner import KubeSpawner

from aispike_hub.model import GIB_IN_MIB, SliceRequest
from aispike_hub.service.client import AdmissionClient, progress_message


class QuotaKubeSpawner(KubeSpawner):  # type: ignore[misc]
    _messages: list[str]

    def _admission(self) -> AdmissionClient:
        return AdmissionClient(parent=self)

    def _request(self) -> SliceRequest:
        gib = int((self.user_options or {}).get("gpu_gib", 8))
        return SliceRequest(gpu_count=1, gpu_memory_mib=gib * GIB_IN_MIB)

    async def start(self) -> Any:
        self._messages = []
        self._admitted = False
        client = self._admission()
        groups = [g.name for g in self.user.groups]
        first = await client.admit(self.user.name, self.name, groups, self._request())
        ticket = first
        async for ticket in client.follow(first):  # the last one is the answer
            self._messages.append(progress_message(ticket))
        self._admitted = True
        if ticket["state"] != "admitted":
            raise SpawnException("; ".join(ticket["reasons"]) or ticket["state"],
                                 reason="quota", status_code=403)
        node = (ticket.get("assignment") or {}).get("node")
        if node:
            self.node_affinity_required = [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        if ticket.get("priority_class"):
            self.extra_labels = {**self.extra_labels, "aispike.io/tier": ticket["tier"]}
        try:
            return await super().start()
        except BaseException:
            await client.release(self.user.name, self.name)
            raise

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            await self._admission().release(self.user.name, self.name)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Queue positions and reasons while waiting for admission, then KubeSpawner's events."""
        sent = 0
        while not getattr(self, "_admitted", False) and self._spawn_future is not None \
                and not self._spawn_future.done():
            for message in getattr(self, "_messages", [])[sent:]:
                sent += 1
                yield {"progress": 5, "message": message}
            await asyncio.sleep(0.3)
        for message in getattr(self, "_messages", [])[sent:]:
            yield {"progress": 5, "message": message}
        async for event in super().progress():
            yield event
