"""The one list + watch loop, against a scripted API (no cluster), and the spawner's node watcher
that runs it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from aispike_hub.kube.watch import ListWatch
from aispike_hub.spawner.nodes import NodeWatcher


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}}


class ScriptedApi:
    """Answers ``list``/``watch`` from scripts; records what was asked.

    ``lists``: each item a list result or an exception to raise; ``watches``: each item the
    events of one watch request.  A call past its script sets ``stop`` (and a list fails).
    """

    def __init__(self, lists: list[Any], watches: list[list[tuple[str, dict[str, Any]]]],
                 stop: threading.Event) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.calls: list[tuple[str, ...]] = []

    def list(self, kind: str, *, query: Mapping[str, Any] | None = None
             ) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", kind, str(dict(query or {}))))
        if not self.lists:
            self.stop.set()
            raise ConnectionError("end of the script")
        result = self.lists.pop(0)
        if isinstance(result, Exception):
            raise result
        items, rv = result
        return items, rv

    def watch(self, kind: str, resource_version: str, *, timeout_seconds: int = 240,
              query: Mapping[str, Any] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", kind, resource_version))
        if not self.watches:
            self.stop.set()
            return
        yield from self.watches.pop(0)


def run(api: ScriptedApi, **kwargs: Any) -> tuple[list[Any], ListWatch]:
    seen: list[Any] = []
    loop = ListWatch(api, "nodes", on_list=lambda items: seen.append(("list", items)),
                     on_event=lambda t, o: seen.append((t, o["metadata"]["name"])),
                     stop=api.stop, first_backoff=0.01, **kwargs)
    loop.run()
    return seen, loop


def test_lists_then_watches_from_the_last_version_and_relists_when_history_is_gone() -> None:
    stop = threading.Event()
    api = ScriptedApi(
        lists=[([obj("a", "5")], "10"), ([obj("a", "5"), obj("b", "30")], "31")],
        watches=[
            [("ADDED", obj("b", "11")), ("BOOKMARK", obj("", "15"))],  # server timeout: resume
            [("MODIFIED", obj("b", "16")), ("ERROR", {"code": 410})],  # 410 Gone: list again
        ],
        stop=stop,
    )
    seen, loop = run(api, query={"fieldSelector": "x"})
    assert loop.synced.is_set()
    assert seen == [("list", [obj("a", "5")]), ("ADDED", "b"), ("MODIFIED", "b"),
                    ("list", [obj("a", "5"), obj("b", "30")])]
    assert [c for c in api.calls if c[0] == "watch"] == [
        ("watch", "nodes", "10"), ("watch", "nodes", "15"), ("watch", "nodes", "31")]
    assert api.calls[0] == ("list", "nodes", "{'fieldSelector': 'x'}")


def test_errors_back_off_and_retry(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[ConnectionError("refused"), ([], "1")], watches=[], stop=stop)
    with caplog.at_level(logging.WARNING):
        seen, loop = run(api, name="test")
    assert seen == [("list", [])] and loop.synced.is_set()
    assert "test: nodes list/watch failed (refused); retrying in 0.0 s" in caplog.text


def test_a_resync_lists_again_after_resync_seconds() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[([], "1"), ([], "2")], watches=[[]], stop=stop)
    seen, _ = run(api, resync_seconds=0.0)
    assert [s[0] for s in seen] == ["list", "list"]
    assert not [c for c in api.calls if c[0] == "watch" and c[2] == "1"]  # resync was due


def test_stop_ends_the_loop_at_the_next_event() -> None:
    stop = threading.Event()
    api = ScriptedApi(lists=[([], "1")], watches=[[("ADDED", obj("a", "2"))] * 3], stop=stop)
    seen: list[str] = []
    loop = ListWatch(api, "nodes", on_list=lambda items: None,
                     on_event=lambda t, o: (seen.append(t), stop.set()), stop=stop)
    thread = loop.start()
    thread.join(5)
    assert not thread.is_alive() and seen == ["ADDED"]


def node(name: str, rv: str, gpus: str = "2") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv,
                         "labels": {"nvidia.com/gpu.product": "A100",
                                    "nvidia.com/gpu.memory": "81920"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": gpus},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def test_the_spawners_node_watcher_runs_the_same_loop() -> None:
    async def main() -> None:
        deleted = {"metadata": {"name": "gone", "resourceVersion": "3"}}
        api = ScriptedApi(lists=[([node("n0", "1"), node("gone", "1")], "2")],
                          watches=[[("MODIFIED", node("n0", "3", gpus="4")),
                                    ("DELETED", deleted)]], stop=threading.Event())
        watcher = NodeWatcher(api, watch_pods=False, watch_slices=False)
        api.stop = watcher._stop  # the end of the script stops the watcher's loop
        watcher.start()
        await asyncio.wait_for(asyncio.shield(watcher.first_load), 5)
        for _ in range(250):
            if api.stop.is_set():
                break
            await asyncio.sleep(0.02)
        (n0,) = watcher.nodes()
        assert n0.name == "n0" and len(n0.gpus) == 4 and n0.gpus[0].memory_mib == 81920
        await watcher.stop()

    asyncio.run(main())
