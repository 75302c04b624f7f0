"""Alembic environment of the AISpike service's store (run by :mod:`.` , never by hand).

The service's tables share a database with nothing else of ours, but an admin may give the
service the hub's own PostgreSQL database: the version table is ``aispike_alembic_version``,
never JupyterHub's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from aispike_hub.service import history  # noqa: F401 (its table is in Base too)
from aispike_hub.service.migrations import VERSION_TABLE
from aispike_hub.service.store import Base

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
