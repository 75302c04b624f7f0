"""The dataset cache: inventory, corrupt entries logged and skipped, LRU eviction."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aispike_hub.agent.datasets import (
    MANIFEST,
    CachedDataset,
    evict,
    mark_used,
    plan_eviction,
    scan_cache,
)


def dataset(root: Path, name: str, sizes: list[int], last_used: float | None = None,
            mtime: float = 1000.0) -> Path:
    d = root / name
    d.mkdir()
    for i, size in enumerate(sizes):
        sub = d / f"part{i}" / "shard.bin"
        sub.parent.mkdir()
        sub.write_bytes(b"x" * size)
    if last_used is not None:
        (d / MANIFEST).write_text(json.dumps({"last_used": last_used}))
    os.utime(d, (mtime, mtime))
    return d


def test_scan_lists_datasets_with_bytes_and_last_use(tmp_path: Path) -> None:
    dataset(tmp_path, "imagenet-mini", [1000, 500], last_used=5000.0)
    dataset(tmp_path, "cifar10", [300], mtime=4000.0)  # no manifest: the mtime stands in
    single = tmp_path / "glove.6B.zip"
    single.write_bytes(b"y" * 42)
    os.utime(single, (3000.0, 3000.0))
    (tmp_path / ".downloading-coco").mkdir()
    (tmp_path / "coco.partial").write_bytes(b"z" * 10)
    scan = scan_cache(tmp_path)
    by_name = {d.name: d for d in scan.datasets}
    assert set(by_name) == {"imagenet-mini", "cifar10", "glove.6B.zip"}
    manifest_bytes = len(json.dumps({"last_used": 5000.0}))
    assert by_name["imagenet-mini"] == CachedDataset("imagenet-mini", 1500 + manifest_bytes, 5000.0)
    assert by_name["cifar10"] == CachedDataset("cifar10", 300, 4000.0)
    assert by_name["glove.6B.zip"] == CachedDataset("glove.6B.zip", 42, 3000.0)
    assert scan.skipped == ()


def test_missing_cache_dir_is_empty(tmp_path: Path) -> None:
    assert scan_cache(tmp_path / "nope").datasets == ()


@pytest.mark.parametrize(
    "manifest",
    [b"{not json", b"[1, 2]", b'{"last_used": "yesterday"}', b'{"last_used": -5}',
     b'{"last_used": true}', b"\xff\xfe\x00"],
)
def test_corrupt_manifests_are_logged_and_skipped(
    tmp_path: Path, manifest: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    bad = dataset(tmp_path, "bad", [10])
    (bad / MANIFEST).write_bytes(manifest)
    dataset(tmp_path, "good", [20], last_used=10.0)
    with caplog.at_level(logging.WARNING):
        scan = scan_cache(tmp_path)
    assert [d.name for d in scan.datasets] == ["good"]
    assert [name for name, _why in scan.skipped] == ["bad"]
    assert "skipping" in caplog.text and "bad" in caplog.text
    # and a corrupt entry is never evicted, even when over the limit
    assert [v.name for v in plan_eviction(scan.datasets, 1)] == ["good"]


def test_symlinks_are_skipped_and_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * 10_000)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "link").symlink_to(outside)
    d = dataset(cache, "real", [5])
    (d / "escape").symlink_to(outside)
    scan = scan_cache(cache)
    assert [(x.name, x.bytes) for x in scan.datasets] == [("real", 5)]
    assert [name for name, _ in scan.skipped] == ["link"]


NOBODY = 65534
"""The uid an unprivileged scan runs as when the tests run as root (root reads everything)."""


def scan_skipped_as(root: Path, uid: int | None) -> list[str]:
    """The names ``scan_cache(root)`` skips, scanned by ``uid`` in a forked child that drops
    root before scanning (``None``: this process)."""
    if uid is None:
        return [name for name, _ in scan_cache(root).skipped]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: give up root, scan, report, exit without pytest's teardown
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            names = [name for name, _ in scan_cache(root).skipped]
            os.write(write, json.dumps(names).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged scan failed"
    return list(json.loads(data))


def test_unreadable_entry_is_skipped() -> None:
    """A dataset the agent cannot read is skipped with its name, the rest still listed.  As
    root, the scan runs as an unprivileged uid over a directory that uid can traverse."""
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="aispike-datasets-"))
    try:
        root.chmod(0o755)
        locked = dataset(root, "locked", [5])
        dataset(root, "open", [7])
        for p in (root, *root.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (locked / "part0").chmod(0)
        assert scan_skipped_as(root, NOBODY if as_root else None) == ["locked"]
    finally:
        for p in root.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(root)


def test_plan_eviction_lru_until_under_limit() -> None:
    ds = [
        CachedDataset("a", 100, 10.0),
        CachedDataset("b", 300, 30.0),
        CachedDataset("c", 200, 20.0),
        CachedDataset("d", 50, 40.0),
    ]
    assert plan_eviction(ds, 0) == []  # no limit
    assert plan_eviction(ds, 650) == []
    assert [v.name for v in plan_eviction(ds, 600)] == ["a"]
    assert [v.name for v in plan_eviction(ds, 400)] == ["a", "c"]
    assert [v.name for v in plan_eviction(ds, 300)] == ["a", "c", "b"]
    assert [v.name for v in plan_eviction(ds, 300, in_use={"a"})] == ["c", "b"]
    assert [v.name for v in plan_eviction(ds, 1, in_use={"a", "b", "c", "d"})] == []


def test_plan_eviction_ties_free_more_first() -> None:
    ds = [CachedDataset("small", 10, 5.0), CachedDataset("big", 90, 5.0)]
    assert [v.name for v in plan_eviction(ds, 50)] == ["big"]


def test_evict_removes_only_inside_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    dataset(cache, "old", [10])
    (cache / "file.bin").write_bytes(b"1")
    keep = tmp_path / "keep"
    keep.mkdir()
    removed = evict(cache, ["old", "file.bin", "../keep", "..", "", "gone"])
    assert removed == ["old", "file.bin"]
    assert keep.exists() and list(cache.iterdir()) == []


def test_mark_used_updates_last_use(tmp_path: Path) -> None:
    dataset(tmp_path, "ds", [1], last_used=1.0)
    (tmp_path / "one.bin").write_bytes(b"1")
    mark_used(tmp_path, "ds", 777.0)
    mark_used(tmp_path, "one.bin", 888.0)
    by_name = {d.name: d.last_used for d in scan_cache(tmp_path).datasets}
    assert by_name == {"ds": 777.0, "one.bin": 888.0}
