# The store of fc98d60, the release before migrations, frozen as it was (issue 26): the
# migration tests build "the previous release's database" with it, on sqlite and PostgreSQL.
# ruff: noqa
# mypy: ignore-errors
"""The AISpike service's durable state: policy, reservations, notices and the audit log.

SQLAlchemy, so the same code runs on sqlite (one file, the default: a single hub needs nothing
else) and on PostgreSQL (production, where the service's pod may be rescheduled and its disk
with it).  Everything a restart must keep lives here: the policy as edited at run time, every
admitted or queued request (an admitted request is never lost by a restart, or the quota it
holds would be handed out twice), the notices users have not read, and who changed what.

The store is deliberately dumb: rows in, rows out.  Rules live in :mod:`aispike_hub.quota`,
the order of operations in :mod:`aispike_hub.admission.controller`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

SCHEMA_VERSION = 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class PolicyDocRow(Base):
    """The whole policy document (one row; a new version replaces it, the audit keeps history)."""

    __tablename__ = "aispike_policy"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")


class ReservationRow(Base):
    """One server's admission: admitted (holds quota) or queued (waits)."""

    __tablename__ = "aispike_reservations"
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    server: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    """admitted | queued"""
    seq: Mapped[int] = mapped_column(Integer, index=True)
    """Arrival order (queue) and admission order (least work lost when preempting)."""
    groups: Mapped[list[str]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    charge: Mapped[dict[str, int]] = mapped_column(JSON)
    tier: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    borrowed: Mapped[bool] = mapped_column(Boolean, default=False)
    assignment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    preempting: Mapped[list[str]] = mapped_column(JSON, default=list)
    """For a queued request: "user/server" keys of the servers being stopped for it."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    admitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    deadline: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    """Queued: when it gives up.  Admitted and chosen as a victim: when it is stopped."""


class NoticeRow(Base):
    """Something a user must be told (preempted, warned, gave up waiting)."""

    __tablename__ = "aispike_notices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    server: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AuditRow(Base):
    """Who did what, when: every policy change, admission decision change and preemption."""

    __tablename__ = "aispike_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(512), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MetaRow(Base):
    __tablename__ = "aispike_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat() + "Z", "actor": self.actor,
                "action": self.action, "target": self.target, "detail": self.detail}


def make_engine(url: str) -> Engine:
    """An engine for ``url``; sqlite gets WAL and a busy timeout (the hub may read it too)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Tables of the service in one database; short transactions through :meth:`session`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.session() as s:
            if s.get(MetaRow, "schema_version") is None:
                s.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as s, s.begin():
            yield s

    # -- policy ------------------------------------------------------------------------------
    def policy_doc(self) -> tuple[dict[str, Any], int] | None:
        """The stored policy document and its version, or None if never stored."""
        with self.session() as s:
            row = s.get(PolicyDocRow, 1)
            return (dict(row.doc), row.version) if row else None

    def save_policy(self, s: Session, doc: dict[str, Any], actor: str) -> int:
        row = s.get(PolicyDocRow, 1)
        if row is None:
            row = PolicyDocRow(id=1, doc=doc, version=1, updated_by=actor, updated_at=utcnow())
            s.add(row)
            return 1
        row.doc = json.loads(json.dumps(doc))
        row.version += 1
        row.updated_by = actor
        row.updated_at = utcnow()
        return row.version

    # -- audit -------------------------------------------------------------------------------
    @staticmethod
    def audit(s: Session, actor: str, action: str, target: str = "",
              detail: dict[str, Any] | None = None) -> None:
        s.add(AuditRow(actor=actor, action=action, target=target, detail=detail or {},
                       at=utcnow()))

    def audit_log(self, limit: int = 100, action: str | None = None,
                  before_id: int | None = None) -> list[AuditEntry]:
        """Newest first."""
        with self.session() as s:
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if action:
                q = q.where(AuditRow.action == action)
            if before_id:
                q = q.where(AuditRow.id < before_id)
            return [AuditEntry(r.id, r.at, r.actor, r.action, r.target, dict(r.detail))
                    for r in s.scalars(q)]

    # -- reservations ------------------------------------------------------------------------
    @staticmethod
    def reservations(s: Session, state: str | None = None) -> list[ReservationRow]:
        q = select(ReservationRow).order_by(ReservationRow.seq)
        if state:
            q = q.where(ReservationRow.state == state)
        return list(s.scalars(q))

    @staticmethod
    def next_seq(s: Session) -> int:
        top = s.scalar(select(func.max(ReservationRow.seq)))
        row = s.get(MetaRow, "seq")
        last = max(int(row.value) if row else 0, top or 0)
        if row is None:
            s.add(MetaRow(key="seq", value=str(last + 1)))
        else:
            row.value = str(last + 1)
        return last + 1

    # -- notices -----------------------------------------------------------------------------
    @staticmethod
    def notify(s: Session, user: str, server: str, kind: str, message: str) -> None:
        s.add(NoticeRow(user=user, server=server, kind=kind, message=message, at=utcnow()))

    def notices(self, user: str, limit: int = 20) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(NoticeRow).where(NoticeRow.user == user)
                             .order_by(NoticeRow.id.desc()).limit(limit))
            return [{"id": r.id, "server": r.server, "kind": r.kind, "message": r.message,
                     "at": r.at.isoformat() + "Z"} for r in rows]

    def dismiss_notices(self, user: str, upto_id: int) -> None:
        with self.session() as s:
            s.execute(delete(NoticeRow).where(NoticeRow.user == user, NoticeRow.id <= upto_id))
