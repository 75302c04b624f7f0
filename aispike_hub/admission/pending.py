"""Releases the AISpike service did not get, kept on disk and sent again.

Why: a server that stops gives its admission back with a ``DELETE`` to the service.  When the
service cannot be reached at that moment (JupyterHub stops its managed services *before* the
servers at shutdown; a service restart; a network blip) the ticket would count against the user,
the group and the cluster until someone noticed.  The REST client
(:class:`aispike_hub.admission.client.AdmissionClient`) therefore writes such a release here and
sends it again:

- every ``release_retry_interval`` seconds while the hub runs;
- before any other call to the service (an admission, a fit preview, a status), so the next
  start after a hub restart, or after the service came back, never counts a stopped server;
- before an admission of the *same* server, always, and under one lock: a deferred release is
  never sent after that server's next admission (it would take the new ticket away).

The file (JSON, written atomically) lives next to the hub's own database by default, so it
survives a hub restart.  The service's reconciliation of tickets with the hub's servers is the
backstop for anything lost with the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["PendingReleases", "pending_releases"]

log = logging.getLogger("aispike.admission")

Key = tuple[str, str]
"""(user, server name)."""


class PendingReleases:
    """The deferred releases of one hub process, in a JSON file (``path``; '' = memory only)."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._items: dict[Key, str] = {}
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.Task[None] | None = None
        self._load()

    # -- the file --------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path:
            return
        try:
            doc = json.loads(Path(self.path).read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("cannot read the pending admission releases in %s (%s): starting "
                        "without them; the AISpike service's reconciliation frees those tickets",
                        self.path, e)
            return
        for entry in doc.get("pending", []) if isinstance(doc, dict) else []:
            if isinstance(entry, dict) and isinstance(entry.get("user"), str) \
                    and isinstance(entry.get("server"), str):
                self._items[(entry["user"], entry["server"])] = str(entry.get("since", ""))

    def _save(self) -> None:
        if not self.path:
            return
        doc = {"pending": [{"user": u, "server": s, "since": since}
                           for (u, s), since in sorted(self._items.items())]}
        target = Path(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, target)
        except OSError as e:
            log.warning("cannot write the pending admission releases to %s: %s", self.path, e)

    # -- the set ---------------------------------------------------------------------------
    def add(self, user: str, server: str) -> None:
        self._items.setdefault((user, server), dt.datetime.now(dt.UTC).isoformat())
        self._save()

    def discard(self, user: str, server: str) -> None:
        if self._items.pop((user, server), None) is not None:
            self._save()

    def keys(self) -> list[Key]:
        return sorted(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    # -- sending ---------------------------------------------------------------------------
    def lock(self) -> asyncio.Lock:
        """One lock per event loop: releases and the admissions they precede take turns."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def flush(self, send: Callable[[str, str], Awaitable[Any]],
                    unreachable: Callable[[BaseException], bool],
                    must: Key | None = None) -> None:
        """Send every deferred release (call with :meth:`lock` held).

        Stops at the first that finds the service unreachable; raises it only when it is
        ``must`` (the server about to be admitted: its admission would fail the same way).
        Other errors (the service refused) drop the entry with a warning: retrying cannot help.
        """
        keys = self.keys()
        if must is not None and must in self._items:
            keys.remove(must)
            keys.insert(0, must)
        for user, server in keys:
            try:
                await send(user, server)
            except Exception as e:
                if unreachable(e):
                    if (user, server) == must:
                        raise
                    return
                log.warning("dropping the deferred release of %s/%s: %s", user, server, e)
            else:
                log.info("deferred release of %s/%s sent", user, server)
            self.discard(user, server)

    def retry_soon(self, interval: float, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` every ``interval`` seconds while anything is pending (one loop)."""
        if self._retry is not None and not self._retry.done():
            return

        async def loop() -> None:
            while self._items:
                await asyncio.sleep(interval)
                try:
                    await attempt()
                except Exception as e:  # keep retrying; the next attempt logs again
                    log.debug("deferred releases not sent yet: %s", e)

        self._retry = asyncio.ensure_future(loop())


_by_path: dict[str, PendingReleases] = {}


def pending_releases(path: str) -> PendingReleases:
    """The process's one :class:`PendingReleases` for ``path`` (made absolute)."""
    key = os.path.abspath(path) if path else ""
    found = _by_path.get(key)
    if found is None:
        found = _by_path[key] = PendingReleases(key)
    return found
