"""Pod logs as a kubelet keeps them, so that ``kubectl logs`` works for pods the runner runs.

A kubelet writes each container's stdout and stderr to a file in the CRI log format
(``<RFC 3339 time> <stream> <F|P> <text>``, one line per line the container wrote, ``P`` for
the pieces of a line too long to keep whole) and keeps the previous instance's file after a
restart, for ``kubectl logs --previous``.  The API server reaches the node's kubelet for
``kubectl logs``; here that is kwok's server (scripts/test-cluster gives every node kwok's
address as its kubelet endpoint and runs kwok with its ``Logs`` objects enabled), which reads the
files a pod's ``Logs`` object names.  The runner writes those files with a :class:`LogPump` and
creates one ``Logs`` object per pod, owned by the pod so that the garbage collector removes it
with the pod.

The pump also appends every byte, unchanged, to the pod's ``pod.log``, which tests read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("podrunner.logs")

LOGS_GROUP, LOGS_VERSION, LOGS_PLURAL = "kwok.x-k8s.io", "v1alpha1", "logs"

MAX_LINE = 16 * 1024
"""A line longer than this is written in ``P`` (partial) pieces, as containerd does."""


def cri_timestamp(ns: int | None = None) -> str:
    """``time.time_ns()`` as RFC 3339 with nanoseconds in UTC, the CRI log's first field."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def cri_lines(pending: bytes, data: bytes, stream: str, *, final: bool = False,
              now: int | None = None) -> tuple[bytes, bytes]:
    """``(CRI records, what is left over)`` for ``data`` read after ``pending`` (an unfinished
    line).  ``final``: the stream ended, so an unfinished line is written whole."""
    stamp = cri_timestamp(now).encode()
    out = bytearray()
    buffer = pending + data
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            break
        line, buffer = buffer[:end], buffer[end + 1:]
        while len(line) > MAX_LINE:
            out += b"%s %s P %s\n" % (stamp, stream.encode(), line[:MAX_LINE])
            line = line[MAX_LINE:]
        out += b"%s %s F %s\n" % (stamp, stream.encode(), line)
    while len(buffer) > MAX_LINE:
        out += b"%s %s P %s\n" % (stamp, stream.encode(), buffer[:MAX_LINE])
        buffer = buffer[MAX_LINE:]
    if final and buffer:
        out += b"%s %s F %s\n" % (stamp, stream.encode(), buffer)
        buffer = b""
    return bytes(out), buffer


def write_output(raw: Path, cri: Path, stream: str, data: bytes) -> None:
    """A finished process's whole output on one stream (an init container's), in both files."""
    if not data:
        return
    with open(raw, "ab") as out:
        out.write(data)
    records, _ = cri_lines(b"", data, stream, final=True)
    with open(cri, "ab") as out:
        out.write(records)


def rotate(current: Path, previous: Path) -> None:
    """A container restarts: its log so far becomes the previous instance's."""
    if current.exists():
        os.replace(current, previous)


@dataclass
class _Followed:
    stream: str
    raw: IO[bytes]
    cri: IO[bytes]
    pending: bytes = b""


@dataclass
class LogPump:
    """One thread that copies every followed pipe into its pod's raw and CRI files.

    One thread for all pods (not two per process): the runner may run hundreds of notebook pods.
    A pipe is dropped at its end of file (the process exited)."""

    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _wake: tuple[int, int] | None = None
    _closed: bool = False

    def follow(self, pipe: IO[bytes], stream: str, raw: Path, cri: Path) -> None:
        """Copy ``pipe`` (a process's stdout or stderr) from now until its end."""
        os.set_blocking(pipe.fileno(), False)
        # Open for as long as the pipe is followed; _end closes them.
        followed = _Followed(stream, open(raw, "ab"), open(cri, "ab"))  # noqa: SIM115
        with self._lock:
            if self._closed:
                raise RuntimeError("the log pump is closed")
            if self._thread is None:
                self._wake = os.pipe()
                os.set_blocking(self._wake[0], False)
                self._selector.register(self._wake[0], selectors.EVENT_READ, None)
                self._thread = threading.Thread(target=self._run, name="pod-logs", daemon=True)
                self._thread.start()
            self._selector.register(pipe, selectors.EVENT_READ, followed)
            os.write(self._wake[1], b"x")  # type: ignore[index]

    def close(self) -> None:
        """Stop the thread after reading once more what the pipes hold."""
        with self._lock:
            self._closed = True
            thread, wake = self._thread, self._wake
        if thread is None or wake is None:
            return
        os.write(wake[1], b"x")
        thread.join(timeout=5)

    def _run(self) -> None:
        assert self._wake is not None
        while True:
            with self._lock:
                closed = self._closed
            # Once closed: one last look at what the pipes hold, then every file is closed.
            for key, _ in self._selector.select(timeout=0 if closed else 1):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake[0], 4096)
                else:
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            if closed:
                with self._lock:
                    for key in list(self._selector.get_map().values()):
                        if key.data is not None:
                            self._end(key.fileobj, key.data)  # type: ignore[arg-type]
                    self._selector.close()
                    for fd in self._wake:
                        os.close(fd)
                return

    def _read(self, pipe: IO[bytes], followed: _Followed) -> None:
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with self._lock:
                self._end(pipe, followed)
            return
        try:
            followed.raw.write(data)
            followed.raw.flush()
            records, followed.pending = cri_lines(followed.pending, data, followed.stream)
            followed.cri.write(records)
            followed.cri.flush()
        except OSError as e:  # the pod's directory went (runner stopping): drop the pipe
            log.debug("pod log write failed: %s", e)
            with self._lock:
                self._end(pipe, followed)

    def _end(self, pipe: IO[bytes], followed: _Followed) -> None:
        self._selector.unregister(pipe)
        with contextlib.suppress(OSError):
            records, _ = cri_lines(followed.pending, b"", followed.stream, final=True)
            followed.cri.write(records)
        for f in (followed.raw, followed.cri, pipe):
            with contextlib.suppress(OSError):
                f.close()


def logs_object(pod: Any, files: Iterable[tuple[str, Path, Path]]) -> dict[str, Any]:
    """The kwok ``Logs`` object for ``pod``: each ``(container, current file, previous file)``,
    owned by the pod (deleted with it by the garbage collector)."""
    return {
        "apiVersion": f"{LOGS_GROUP}/{LOGS_VERSION}",
        "kind": "Logs",
        "metadata": {
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                 "uid": pod.metadata.uid}],
        },
        "spec": {"logs": [
            {"containers": [name], "logsFile": str(current), "previousLogsFile": str(previous)}
            for name, current, previous in files
        ]},
    }
