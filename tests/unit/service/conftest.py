"""Fixtures for the AISpike service's tests: a store on sqlite, and on a real PostgreSQL.

``postgres_url`` starts a throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback
port in a temporary directory, once per session, and stops it afterwards.  As root it runs the
server as the ``postgres`` user (PostgreSQL refuses to run as root).  Without the server
binaries the PostgreSQL cases are skipped, except with ``CI=true`` where they fail: CI must
never pass by skipping (``.ci/run`` installs Debian's ``postgresql``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools import unavailable


def _unavailable(reason: str) -> None:
    unavailable(f"PostgreSQL is not usable: {reason}")


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries not found (apt-get install postgresql)")
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg not installed (pip install -e '.[service]')")
    # Not under pytest's tmp dir: that is private to root (0700), and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="aispike-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server")
            return
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "aispike", "-A", "trust",
            "--no-sync", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
            "-o", f"-h 127.0.0.1 -p {port} -k {sock} -F", "start")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"could not start PostgreSQL: {e.stderr}\n{e.stdout}", pytrace=False)
    url = f"postgresql+psycopg://aispike@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


_DB_COUNTER = [0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/aispike.sqlite"
    base: str = request.getfixturevalue("postgres_url")
    import sqlalchemy

    _DB_COUNTER[0] += 1
    name = f"t{os.getpid()}_{_DB_COUNTER[0]}"
    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"
