"""Schema migrations of the service's store (Alembic), as JupyterHub migrates its own database.

- A new, empty database gets today's tables and is stamped with the newest revision.
- A database of the release before migrations (its tables, ``schema_version`` 1 in
  ``aispike_meta``, no version table) is revision ``0001``, the baseline.
- A database behind the newest revision is never used as it is: the service refuses to start
  and names the command, ``aispike-hub service upgrade-db`` (or upgrades by itself with
  ``AISpikeService.upgrade_db = True``, like ``jupyterhub --upgrade-db``).  Upgrading a sqlite
  file copies it first (``<file>.<UTC time>.bak``), as JupyterHub does.
- A database newer than this code (a downgrade of the package) is refused too.

The version table is ``aispike_alembic_version``: the service may share a PostgreSQL database
with the hub, whose own table is ``alembic_version``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine, make_url

VERSION_TABLE = "aispike_alembic_version"
BASELINE = "0001"
UPGRADE_COMMAND = "aispike-hub service upgrade-db"
HERE = Path(__file__).parent


class SchemaError(RuntimeError):
    """The database's schema is not this code's: behind (upgrade it) or ahead (newer code)."""

    def __init__(self, message: str, current: str | None, head: str) -> None:
        super().__init__(message)
        self.current = current
        self.head = head


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the service's migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:
        return False


def current(engine: Engine) -> str | None:
    """The database's revision: None for an empty database, :data:`BASELINE` for one of the
    release before migrations (our tables, no version table)."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE in tables:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if "aispike_reservations" in tables:
            return BASELINE
        return None


def stamp_head(engine: Engine) -> None:
    """Mark a database whose tables were just created from the models as the newest revision."""
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "head")


def backup_sqlite(url: str) -> Path | None:
    """Copy a sqlite file beside itself before an upgrade; its path (None: not a file)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database \
            or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    if not path.exists():
        return None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    shutil.copy2(path, backup)
    for suffix in ("-wal", "-shm"):  # WAL mode: committed pages may still be in the -wal file
        side = path.with_name(path.name + suffix)
        if side.exists():
            shutil.copy2(side, backup.with_name(backup.name + suffix))
    return backup


def upgrade(engine: Engine, url: str) -> tuple[str | None, str, Path | None]:
    """Bring the database to the newest revision: (revision before, after, sqlite backup).

    A database of the release before migrations is stamped as the baseline first.  Nothing is
    copied or changed when it is already current.
    """
    before = current(engine)
    target = head()
    if before == target:
        return before, target, None
    if before is not None and not known(before):
        raise SchemaError(f"the database is at revision {before}, newer than this "
                          f"aispike-hub (newest {target}): run the newer version", before, target)
    backup = backup_sqlite(url) if before is not None else None
    with engine.begin() as conn:
        cfg = alembic_config(conn)
        if before == BASELINE and VERSION_TABLE not in inspect(conn).get_table_names():
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
    return before, target, backup


def check(engine: Engine) -> None:
    """Raise :class:`SchemaError` (naming the command) unless the database is current."""
    now, target = current(engine), head()
    if now == target:
        return
    if now is not None and not known(now):
        raise SchemaError(f"the database is at revision {now}, newer than this aispike-hub "
                          f"(newest {target}): run the newer version", now, target)
    raise SchemaError(f"the database is at revision {now}, behind this aispike-hub's {target}: "
                      f"back it up and run '{UPGRADE_COMMAND}' (with the service's config), or "
                      f"set AISpikeService.upgrade_db = True", now, target)
