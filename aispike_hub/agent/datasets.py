"""The node-local dataset cache: what it holds, and which datasets to evict when it is too full.

Why: locality affinity places a notebook where its datasets are already cached, so the agent
publishes the cache's contents (``aispike.io/datasets`` on the Node), and keeps the cache under
its size limit by evicting the least recently used datasets first.

Layout: each entry directly under the cache directory is one dataset (a directory or a single
file) named after the entry.  A dataset directory may hold a manifest ``.aispike-dataset.json``:
``{"last_used": <seconds since the epoch>}``; whoever mounts a dataset into a notebook updates it
(:func:`mark_used`).  Without a manifest the entry's modification time stands for its last use.
Entries whose name starts with "." or ends with ".partial" are downloads in progress: not listed,
never evicted.  An entry that cannot be read, or whose manifest is corrupt, is logged and skipped:
it is neither published nor evicted (the agent does not delete what it does not understand).

:func:`plan_eviction` is pure; :func:`scan_cache`, :func:`evict` and :func:`mark_used` do the I/O.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = ".aispike-dataset.json"


@dataclass(frozen=True, slots=True)
class CachedDataset:
    """One dataset in the cache."""

    name: str
    bytes: int
    last_used: float
    """Seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class CacheScan:
    """The cache's datasets, and the entries that were skipped with the reason why."""

    datasets: tuple[CachedDataset, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(d.bytes for d in self.datasets)


class CorruptEntry(Exception):
    """A cache entry the agent cannot make sense of."""


def _is_in_progress(name: str) -> bool:
    return name.startswith(".") or name.endswith(".partial")


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``, not following symbolic links."""
    total = 0
    for root, dirs, files in os.walk(path, onerror=_raise):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return total


def _raise(error: OSError) -> None:
    raise error


def _read_manifest(path: Path) -> float | None:
    manifest = path / MANIFEST
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptEntry(f"unreadable manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptEntry("manifest is not a JSON object")
    value = data.get("last_used")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise CorruptEntry(f"manifest last_used is not a time: {value!r}")
    return float(value)


def read_entry(path: Path) -> CachedDataset:
    """One cache entry as a dataset; raises :class:`CorruptEntry` or ``OSError`` if it is bad."""
    st = path.lstat()
    if path.is_symlink():
        raise CorruptEntry("is a symbolic link")
    if path.is_dir():
        last = _read_manifest(path)
        size = _tree_bytes(path)
        return CachedDataset(path.name, size, last if last is not None else st.st_mtime)
    if path.is_file():
        return CachedDataset(path.name, st.st_size, st.st_mtime)
    raise CorruptEntry("is neither a file nor a directory")


def scan_cache(cache_dir: str | Path) -> CacheScan:
    """Inventory of the cache directory; a missing directory is an empty cache."""
    root = Path(cache_dir)
    datasets: list[CachedDataset] = []
    skipped: list[tuple[str, str]] = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return CacheScan(())
    for path in entries:
        if _is_in_progress(path.name):
            continue
        try:
            datasets.append(read_entry(path))
        except (CorruptEntry, OSError) as exc:
            log.warning("dataset cache: skipping %s: %s", path, exc)
            skipped.append((path.name, str(exc)))
    return CacheScan(tuple(datasets), tuple(skipped))


def plan_eviction(
    datasets: Sequence[CachedDataset], limit_bytes: int, in_use: Collection[str] = ()
) -> list[CachedDataset]:
    """Datasets to evict, least recently used first, until the cache fits in ``limit_bytes``.

    Datasets in ``in_use`` (mounted by a running notebook) are never evicted, even if the cache
    then stays over its limit.  Ties in last use go to the larger dataset first (frees more), then
    by name so the plan is deterministic.  ``limit_bytes <= 0`` means no limit.
    """
    if limit_bytes <= 0:
        return []
    total = sum(d.bytes for d in datasets)
    victims: list[CachedDataset] = []
    for d in sorted(datasets, key=lambda d: (d.last_used, -d.bytes, d.name)):
        if total <= limit_bytes:
            break
        if d.name in in_use:
            continue
        victims.append(d)
        total -= d.bytes
    return victims


def evict(cache_dir: str | Path, names: Iterable[str]) -> list[str]:
    """Delete the named datasets from the cache; returns the names actually removed.

    Refuses names that are not a single path component (no "..", no "/"), so a bad name can never
    reach outside the cache directory.
    """
    root = Path(cache_dir)
    removed = []
    for name in names:
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            log.error("dataset cache: refusing to evict %r", name)
            continue
        path = root / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("dataset cache: could not evict %s: %s", path, exc)
            continue
        log.info("dataset cache: evicted %s", name)
        removed.append(name)
    return removed


def mark_used(cache_dir: str | Path, name: str, when: float) -> None:
    """Record that dataset ``name`` was used at ``when`` (write its manifest atomically)."""
    path = Path(cache_dir) / name
    if not path.is_dir():
        os.utime(path, (when, when))
        return
    tmp = path / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"last_used": when}), encoding="utf-8")
    os.replace(tmp, path / MANIFEST)
