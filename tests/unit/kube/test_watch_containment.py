"""One bad object never stops the list/watch loop (issue 26): skipped, logged, counted."""

from __future__ import annotations

import threading
from typing import Any

from aispike_hub.kube import rejections
from aispike_hub.kube.watch import ListWatch


class Api:
    def __init__(self, items: list[Any], events: list[tuple[str, Any]],
                 stop: threading.Event) -> None:
        self.items, self.events, self.stop, self.lists = items, events, stop, 0

    def list(self, kind: str, *, query: Any = None) -> tuple[list[Any], str]:
        self.lists += 1
        if self.lists > 1:
            self.stop.set()
            raise ConnectionError("end")
        return self.items, "1"

    def watch(self, kind: str, rv: str, *, timeout_seconds: int = 240, query: Any = None) -> Any:
        yield from self.events
        self.stop.set()


def test_bad_objects_are_skipped_and_counted_the_rest_delivered() -> None:
    rejections.reset()
    stop = threading.Event()
    good = {"metadata": {"name": "a"}}
    poison = {"metadata": {"name": "poison"}}
    items = [good, "not an object", {"metadata": {"name": 10**5000}}, poison]
    api = Api(items, [("ADDED", poison), ("ADDED", [1]), ("MODIFIED", good)], stop)
    lists: list[list[str]] = []
    events: list[str] = []

    def on_list(objs: list[dict[str, Any]]) -> None:
        for o in objs:
            if o["metadata"]["name"] == "poison":
                raise RuntimeError("consumer bug")
        lists.append([o["metadata"]["name"] for o in objs])

    def on_event(etype: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "poison":
            raise RuntimeError("consumer bug")
        events.append(f"{etype} {obj['metadata']['name']}")

    loop = ListWatch(api, "nodes", on_list=on_list, on_event=on_event, stop=stop,
                     first_backoff=0.01)
    loop.run()
    assert loop.synced.is_set()
    assert lists == [["a"]]
    assert events == ["ADDED a", "MODIFIED a"]  # probe of the list, then the watch
    counts = rejections.counts()
    assert counts[("nodes", "malformed")] == 3  # a string, a number name, a list event
    assert counts[("nodes", "consumer_error")] == 2  # poison in the list and in the watch
