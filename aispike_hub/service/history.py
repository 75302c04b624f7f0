"""The admin panel's history: the cluster sampled periodically into the service's store.

For hubs without Prometheus: every ``AdminPanel.history_interval`` seconds the panel writes one
row (allocation ratio, fragmented GPUs, GPUs held by busy, idle and unknown servers and other
workloads, free GPUs, queue length); the charts read them back averaged into at most a few
hundred buckets.  GPU-hours are the integral of GPUs held over time: each sample counts for the
time until the next one (at most two intervals, so a service that was down adds nothing).

The table lives in the same database as the rest of the service (:mod:`.store`), created on
first use; rows older than ``history_retention`` are deleted as new ones are written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import DateTime, Float, Integer, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from aispike_hub.service.store import Base, Store

SERIES = ("gpus", "allocation", "fragmented_gpus", "free_gpus", "busy_gpus", "idle_gpus",
          "unknown_gpus", "other_gpus", "queued")


class HistoryRow(Base):
    """One sample of the cluster as the service sees it."""

    __tablename__ = "aispike_panel_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    gpus: Mapped[float] = mapped_column(Float, default=0.0)
    allocation: Mapped[float] = mapped_column(Float, default=0.0)
    fragmented_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    free_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    busy_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    idle_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    unknown_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    other_gpus: Mapped[float] = mapped_column(Float, default=0.0)
    queued: Mapped[float] = mapped_column(Float, default=0.0)


class History:
    """Write samples, read them back as chart series."""

    def __init__(self, store: Store, retention: float) -> None:
        self.store = store
        self.retention = retention
        HistoryRow.metadata.create_all(store.engine, tables=[HistoryRow.__table__])  # type: ignore[list-item]

    def record(self, at: dt.datetime, values: Mapping[str, float]) -> None:
        with self.store.session() as s:
            s.add(HistoryRow(at=at, **{k: float(values.get(k, 0.0)) for k in SERIES}))
            s.execute(delete(HistoryRow).where(
                HistoryRow.at < at - dt.timedelta(seconds=self.retention)))

    def series(self, since: dt.datetime, until: dt.datetime, interval: float,
               buckets: int = 240) -> dict[str, Any]:
        """Averages per bucket, and GPU-hours held busy, idle (and by all) in the window."""
        with self.store.session() as s:
            rows = list(s.scalars(select(HistoryRow).where(HistoryRow.at >= since,
                                                           HistoryRow.at <= until)
                                  .order_by(HistoryRow.at)))
        span = max((until - since).total_seconds(), 1.0)
        width = span / max(buckets, 1)
        sums: dict[int, dict[str, float]] = {}
        counts: dict[int, int] = {}
        hours = {"busy": 0.0, "idle": 0.0, "unknown": 0.0, "held": 0.0}
        for i, r in enumerate(rows):
            b = int((r.at - since).total_seconds() // width)
            acc = sums.setdefault(b, dict.fromkeys(SERIES, 0.0))
            for k in SERIES:
                acc[k] += float(getattr(r, k))
            counts[b] = counts.get(b, 0) + 1
            nxt = rows[i + 1].at if i + 1 < len(rows) else until
            dt_h = min((nxt - r.at).total_seconds(), 2 * interval) / 3600.0
            hours["busy"] += r.busy_gpus * dt_h
            hours["idle"] += r.idle_gpus * dt_h
            hours["unknown"] += r.unknown_gpus * dt_h
            hours["held"] += (r.busy_gpus + r.idle_gpus + r.unknown_gpus + r.other_gpus) * dt_h
        points = []
        for b in sorted(sums):
            at = since + dt.timedelta(seconds=(b + 0.5) * width)
            points.append({"at": at.isoformat() + "Z",
                           **{k: round(v / counts[b], 4) for k, v in sums[b].items()}})
        return {"since": since.isoformat() + "Z", "until": until.isoformat() + "Z",
                "interval_seconds": interval, "samples": len(rows), "points": points,
                "gpu_hours": {k: round(v, 3) for k, v in hours.items()}}
