"""Reconciliation (issue 26): when a reservation was first seen without its hub server.

``aispike_reservations.missing_since``: the reconciler's first sighting of a ticket whose server
the hub no longer lists; the ticket is released once that lasts ``reconcile_grace`` seconds.  A
column, not memory, so a restarted service keeps counting instead of starting the grace over.

Also ``aispike_panel_history`` (the admin panel's samples), which the release before migrations
created only once the panel ran: created here when missing, so every database ends alike.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aispike_reservations") as batch:
        batch.add_column(sa.Column("missing_since", sa.DateTime, nullable=True))
    if "aispike_panel_history" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "aispike_panel_history",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("at", sa.DateTime, nullable=False, index=True),
            *(sa.Column(name, sa.Float, nullable=False) for name in (
                "gpus", "allocation", "fragmented_gpus", "free_gpus", "busy_gpus",
                "idle_gpus", "unknown_gpus", "other_gpus", "queued")),
        )


def downgrade() -> None:
    with op.batch_alter_table("aispike_reservations") as batch:
        batch.drop_column("missing_since")
