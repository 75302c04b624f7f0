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
Any failure of the API (down, a bad response) is logged and retried with exponential backoff;
setting the ``stop`` event ends the loop at its next event or watch timeout.

One bad object never stops the rest (issue 26).  Every object is checked for the shape every
consumer relies on (:func:`check_shape`: an object with a ``metadata.name`` that is a sane name)
before it is handed over; one that fails is skipped.  A consumer that raises on one watch event
has that event skipped; a consumer whose ``on_list`` raises gets the list again without the
objects it cannot take: each object is offered alone as an ``ADDED`` event to find them (the
contract: ``on_event("ADDED", obj)`` upserts one object, ``on_list`` replaces everything, as both
consumers do).  Each skipped object is logged once and counted in
``aispike_inventory_objects_rejected_total{kind, reason}`` (:mod:`aispike_hub.kube.rejections`).

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

from aispike_hub import sanity
from aispike_hub.kube import rejections

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


def check_shape(obj: object) -> None:
    """Raise :class:`~aispike_hub.sanity.Rejected` unless ``obj`` is an API object every
    consumer can key: a mapping whose ``metadata`` holds a sane ``name`` (and ``namespace``)."""
    if not isinstance(obj, Mapping):
        sanity.reject("malformed", f"expected an object, got {sanity.shorten(obj)}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        sanity.reject("malformed", f"metadata is not an object: {sanity.shorten(meta)}")
    sanity.name(meta.get("name"), "metadata.name")
    if meta.get("namespace") is not None:
        sanity.name(meta.get("namespace"), "metadata.namespace", 63)


def _key(obj: object) -> str:
    if not isinstance(obj, Mapping) or not isinstance(obj.get("metadata"), Mapping):
        return "?"
    meta = obj["metadata"]
    parts = [v if isinstance(v, str) else sanity.shorten(v)
             for v in (meta.get("namespace") or "", meta.get("name"))]
    return sanity.shorten_text("/".join(parts).lstrip("/"), 120)


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
        rejections.register_default()

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
        self._deliver_list([obj for obj in items if self._sane(obj)])
        self.synced.set()
        return rv

    def _reject(self, obj: object, reason: str, message: str) -> None:
        rejections.record(self.kind, reason, _key(obj),
                          f"{self.name}: {self.kind} {_key(obj)}: {message}")

    def _sane(self, obj: object) -> bool:
        """Whether ``obj`` has the shape every consumer relies on (else skipped, counted)."""
        try:
            check_shape(obj)
        except sanity.Rejected as e:
            self._reject(obj, e.reason, e.message)
            return False
        return True

    def _deliver_list(self, items: list[dict[str, Any]]) -> None:
        """``on_list(items)``; when it raises, again without the objects it cannot take."""
        try:
            self.on_list(items)
            return
        except Exception as e:
            if self.stop.is_set():
                raise
            self._log.warning("%s: %s list not taken (%s); offering its objects one by one",
                              self.name, self.kind, sanity.shorten_text(str(e), 200))
        good = [obj for obj in items if self._deliver_event("ADDED", obj)]
        self.on_list(good)  # raises again only for a fault of the consumer: backoff and retry

    def _deliver_event(self, etype: str, obj: dict[str, Any]) -> bool:
        """``on_event(etype, obj)``; an exception skips this object only (logged, counted)."""
        try:
            self.on_event(etype, obj)
        except Exception as e:
            reason = e.reason if isinstance(e, sanity.Rejected) else "consumer_error"
            self._reject(obj, reason, f"{type(e).__name__}: "
                         f"{sanity.shorten_text(str(e), 300)}")
            return False
        return True

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
                meta = obj.get("metadata") if isinstance(obj, Mapping) else None
                version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
                if isinstance(version, str) and 0 < len(version) <= 64:
                    rv = version
                if etype != "BOOKMARK" and self._sane(obj):
                    self._deliver_event(etype, obj)
