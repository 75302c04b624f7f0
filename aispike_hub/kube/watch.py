"""One list + watch loop for every watcher of the Kubernetes API (threads, plain ``dict`` objects).

:class:`ListWatch` keeps one kind current for a consumer that gets two calls:

- ``on_list(items)``: a full list (at start, on every resync, after the watch broke), the
  consumer replaces what it had (and drops what the list no longer has);
- ``on_event(type, object)``: one ``ADDED``/``MODIFIED``/``DELETED`` event of the watch that
  resumes from the list's resourceVersion.

The loop lists, then watches from that resourceVersion (each watch request bounded by the
server-side timeout, resumed from the last resourceVersion seen, bookmarks included); it lists
again when the server ends the history (an ``ERROR`` event, e.g. 410 Gone) and every
``resync_seconds`` (a re-list repairs any drift: a dropped connection, a compacted history).
Any failure (API down, a bad response, the consumer raising) is logged and retried with
exponential backoff; setting the ``stop`` event ends the loop at its next event or watch timeout.

The placement inventory (:mod:`aispike_hub.kube.inventory`, four kinds) and the spawner's node
watcher (:mod:`aispike_hub.spawner.nodes`) both run this loop, so relist and backoff rules live
in one place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

Listed = Callable[[list[dict[str, Any]]], None]
Event = Callable[[str, dict[str, Any]], None]


class ListWatchApi(Protocol):
    """The two verbs the loop needs (:class:`aispike_hub.kube.api.KubeJson` has them)."""

    def list(
        self, kind: str, *, query: Mapping[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self, kind: str, resource_version: str, *, timeout_seconds: int = 240,
        query: Mapping[str, Any] | None = None,
    ) -> Iterable[tuple[str, dict[str, Any]]]: ...


class ListWatch:
    """Keeps one kind of object current for ``on_list``/``on_event`` (see the module doc)."""

    def __init__(
        self,
        api: ListWatchApi,
        kind: str,
        *,
        on_list: Listed,
        on_event: Event,
        stop: threading.Event | None = None,
        query: Mapping[str, Any] | None = None,
        resync_seconds: float = 300.0,
        watch_timeout_seconds: int = 240,
        name: str = "watch",
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.api = api
        self.kind = kind
        self.on_list = on_list
        self.on_event = on_event
        self.stop = stop if stop is not None else threading.Event()
        self.query = dict(query) if query else None
        self.resync_seconds = resync_seconds
        self.watch_timeout_seconds = watch_timeout_seconds
        self.name = name
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.synced = threading.Event()
        """Set once the first list was handed to ``on_list``."""
        self._log = logger or log

    def start(self) -> threading.Thread:
        """Run the loop on a daemon thread named ``<name>-<kind>``."""
        thread = threading.Thread(target=self.run, name=f"{self.name}-{self.kind}", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """List, then watch, until :attr:`stop` is set (the thread's body)."""
        backoff = self.first_backoff
        while not self.stop.is_set():
            try:
                rv = self._list()
                backoff = self.first_backoff
                self._watch_until_resync(rv)
            except Exception as e:
                if self.stop.is_set():
                    return
                self._log.warning("%s: %s list/watch failed (%s); retrying in %.1f s",
                                  self.name, self.kind, e, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _list(self) -> str:
        items, rv = self.api.list(self.kind, query=self.query)
        self.on_list(items)
        self.synced.set()
        return rv

    def _watch_until_resync(self, rv: str) -> None:
        """Watch from ``rv`` until the resync is due, the history is gone or :attr:`stop`."""
        listed = time.monotonic()
        while not self.stop.is_set():
            remaining = self.resync_seconds - (time.monotonic() - listed)
            if remaining <= 0:
                return
            timeout = int(max(1, min(self.watch_timeout_seconds, remaining)))
            for etype, obj in self.api.watch(self.kind, rv, timeout_seconds=timeout,
                                             query=self.query):
                if self.stop.is_set():
                    return
                if etype == "ERROR":
                    return  # e.g. 410 Gone: the history is compacted, list again
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if etype != "BOOKMARK":
                    self.on_event(etype, obj)
