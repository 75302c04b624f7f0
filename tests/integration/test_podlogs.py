"""The pod runner's log files in the CRI format kwok (like a kubelet) reads for ``kubectl logs``.

No cluster needed: what the files hold.  ``kubectl logs`` through the real API server and kwok is
tested in tests/integration/test_podrunner_containers.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from .podlogs import MAX_LINE, LogPump, cri_lines, cri_timestamp, rotate

STAMP = "2026-12-06T01:02:03.000000007Z"
NS = 1796518923_000000007  # STAMP in nanoseconds


def test_timestamp_is_rfc3339_with_nanoseconds_in_utc() -> None:
    assert cri_timestamp(NS) == STAMP
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", cri_timestamp())


def test_whole_lines_are_F_records_and_an_unfinished_line_waits() -> None:
    records, left = cri_lines(b"", b"one\ntwo\nthr", "stdout", now=NS)
    assert records == f"{STAMP} stdout F one\n{STAMP} stdout F two\n".encode()
    assert left == b"thr"
    records, left = cri_lines(left, b"ee\n", "stderr", now=NS)
    assert (records, left) == (f"{STAMP} stderr F three\n".encode(), b"")
    # The stream ended: what is left is written whole, without a newline of its own.
    assert cri_lines(b"tail", b"", "stdout", final=True, now=NS) == (
        f"{STAMP} stdout F tail\n".encode(), b"")
    assert cri_lines(b"", b"", "stdout", final=True, now=NS) == (b"", b"")


def test_long_lines_are_cut_into_P_pieces_ending_with_F() -> None:
    line = b"x" * (MAX_LINE * 2 + 5)
    records, left = cri_lines(b"", line + b"\n", "stdout", now=NS)
    assert left == b""
    assert [r.split(b" ", 3)[2] for r in records.splitlines()] == [b"P", b"P", b"F"]
    assert b"".join(r.split(b" ", 3)[3] for r in records.splitlines()) == line
    # Without its newline yet, the full pieces go out at once; the rest waits.
    records, left = cri_lines(b"", line, "stdout", now=NS)
    assert len(records.splitlines()) == 2 and left == b"x" * 5


def test_the_pump_keeps_raw_output_and_each_stream_in_cri(tmp_path: Path) -> None:
    pump = LogPump()
    raw, cri = tmp_path / "pod.log", tmp_path / "main.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('out', flush=True); "
         "sys.stderr.write('err\\nno newline')"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    pump.follow(process.stdout, "stdout", raw, cri)
    pump.follow(process.stderr, "stderr", raw, cri)
    assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cri.read_text().count("\n") < 3:
        time.sleep(0.05)
    pump.close()
    assert sorted(raw.read_text().splitlines()) == ["err", "no newline", "out"]
    records = sorted(line.split(" ", 1)[1] for line in cri.read_text().splitlines())
    assert records == ["stderr F err", "stderr F no newline", "stdout F out"]


def test_a_restart_makes_the_log_the_previous_one(tmp_path: Path) -> None:
    current, previous = tmp_path / "main.log", tmp_path / "main.previous.log"
    rotate(current, previous)  # nothing yet: nothing to keep
    assert not previous.exists()
    current.write_text("first instance\n")
    previous.write_text("older instance\n")
    rotate(current, previous)
    assert previous.read_text() == "first instance\n" and not current.exists()
