"""Baseline: the store as released before migrations (schema_version 1 in aispike_meta).

A database made by that release has these tables and no version table; :mod:`..` stamps it
with this revision before upgrading, so the baseline never runs on it.  On an empty database
it creates the tables as that release did.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aispike_policy",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("doc", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "aispike_reservations",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("server", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False, index=True),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("charge", sa.JSON, nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("borrowed", sa.Boolean, nullable=False),
        sa.Column("assignment", sa.JSON, nullable=True),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("preempting", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("admitted_at", sa.DateTime, nullable=True),
        sa.Column("deadline", sa.DateTime, nullable=True),
    )
    op.create_table(
        "aispike_notices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), nullable=False, index=True),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "aispike_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False, index=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_table(
        "aispike_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("aispike_meta", "aispike_audit", "aispike_notices", "aispike_reservations",
                  "aispike_policy"):
        op.drop_table(table)
