"""The store's schema changes through Alembic migrations (issue 26): a database of the release
before migrations (built with that release's own store, frozen in ``store_fc98d60``) is refused
until upgraded, upgrades with its rows intact (sqlite copied first), and ends exactly at the
models; an empty database starts current.  Both on sqlite and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import store_fc98d60 as previous
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from service_fixtures import GIB, a100_nodes
from sqlalchemy import inspect

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.quota import User
from aispike_hub.service import (
    history,  # noqa: F401 (its table is in Base)
    migrations,
)
from aispike_hub.service.app import main
from aispike_hub.service.store import Base, ReservationRow, Store

NODES = str(Path(__file__).parents[2] / "fixtures" / "cluster" / "gpu-nodes.yaml")


def previous_release_db(url: str) -> None:
    """A database as the release before migrations left it: policy, an admitted server, a
    queued one, a notice and audit entries."""
    old = previous.Store(url)
    with old.session() as s:
        old.save_policy(s, {"defaults": {"quota": {"gpu_memory": "16Gi"}}}, "config")
        old.audit(s, "config", "policy.seed", "policy", {"after": {}})
        for seq, (user, state) in enumerate((("alice", "admitted"), ("bob", "queued")), 1):
            s.add(previous.ReservationRow(
                user=user, server="", state=state, seq=seq, groups=["ml"],
                request={"gpu_memory_mib": 8 * GIB}, charge={"gpu_memory_mib": 8 * GIB},
                tier="normal", priority=0, borrowed=False,
                assignment={"node": "node-0", "gpu_indices": [0], "gpu_memory_mib": [8 * GIB],
                            "cpu_milli": 1000, "memory_mib": 1024} if state == "admitted"
                else None,
                reasons=[], preempting=[], created_at=dt.datetime(2026, 12, 1),
                admitted_at=dt.datetime(2026, 12, 1) if state == "admitted" else None))
        old.notify(s, "alice", "", "preempted", "stopped")
    old.close()


def schema_diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "version_table": migrations.VERSION_TABLE, "compare_type": False})
        return list(compare_metadata(ctx, Base.metadata))


def test_an_empty_database_starts_at_the_newest_revision(db_url: str) -> None:
    store = Store(db_url)
    assert migrations.current(store.engine) == migrations.head() == "0002"
    assert schema_diff(store) == []
    store.close()


def test_the_previous_release_database_is_refused_until_upgraded(db_url: str) -> None:
    previous_release_db(db_url)
    with pytest.raises(migrations.SchemaError) as refused:
        Store(db_url)
    assert "aispike-hub service upgrade-db" in str(refused.value)
    assert refused.value.current == "0001"

    store = Store(db_url, upgrade=True)
    assert store.upgraded is not None and store.upgraded[:2] == ("0001", "0002")
    assert migrations.current(store.engine) == "0002"
    assert schema_diff(store) == [], "the migrated schema differs from the models"
    cols = {c["name"] for c in inspect(store.engine).get_columns("aispike_reservations")}
    assert "missing_since" in cols
    # The rows of the previous release are all there and used as before.
    assert store.policy_doc() == ({"defaults": {"quota": {"gpu_memory": "16Gi"}}}, 1)
    with store.session() as s:
        rows = {r.user: r for r in store.reservations(s)}
        assert rows["alice"].state == "admitted" and rows["alice"].missing_since is None
        assert rows["bob"].state == "queued"
    assert [n["kind"] for n in store.notices("alice")] == ["preempted"]
    controller = AdmissionController(store, StaticInventory(a100_nodes()),
                                     AdmissionController.load_policy(store, {}))
    assert controller.status("alice", "").state == "admitted"
    assert controller.release("alice", "", "hub")
    ticket = controller.admit(User("carol"), "", _request(), "hub")
    assert ticket.state == "admitted", ticket
    store.close()
    # Upgrading again does nothing; a plain start is accepted now.
    again = Store(db_url, upgrade=True)
    assert again.upgraded is None
    again.close()
    Store(db_url).close()
    if db_url.startswith("sqlite"):
        backups = list(Path(db_url.removeprefix("sqlite:///")).parent.glob("*.bak"))
        assert len(backups) == 1, backups


def _request():  # type: ignore[no-untyped-def]
    from aispike_hub.model import SliceRequest

    return SliceRequest(gpu_memory_mib=4 * GIB)


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite"
    store = Store(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    store.close()
    for upgrade in (False, True):
        with pytest.raises(migrations.SchemaError, match="newer than this aispike-hub"):
            Store(url, upgrade=upgrade)


def test_the_service_refuses_a_database_behind_and_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no aispike_service_config.py here
    url = f"sqlite:///{tmp_path}/aispike.sqlite"
    previous_release_db(url)
    with pytest.raises(SystemExit) as stopped:
        main([f"--db-url={url}", f"--nodes-file={NODES}"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("aispike-hub service: cannot start: database "), err
    assert "'aispike-hub service upgrade-db'" in err and "revision 0001" in err, err

    main(["upgrade-db", f"--db-url={url}"])
    out = capsys.readouterr().out
    assert "upgraded from revision 0001 to 0002; backup " in out, out
    main(["upgrade-db", f"--db-url={url}"])
    assert "already at revision 0002" in capsys.readouterr().out


def test_an_unreachable_database_stops_the_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "postgresql+psycopg://aispike:secret@127.0.0.1:1/aispike?connect_timeout=2"
    with pytest.raises(SystemExit) as stopped:
        main([f"--db-url={url}", f"--nodes-file={NODES}"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "cannot start: cannot use the database" in err and "127.0.0.1:1" in err, err
    assert "secret" not in err


def test_upgrade_db_on_an_unreachable_database_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["upgrade-db", "--db-url=postgresql+psycopg://a@127.0.0.1:1/a?connect_timeout=2"])
    assert stopped.value.code == 1
    assert "cannot use the database" in capsys.readouterr().err


def test_the_service_upgrades_by_itself_with_upgrade_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from aispike_hub.service.app import AISpikeService

    url = f"sqlite:///{tmp_path}/aispike.sqlite"
    previous_release_db(url)
    app = AISpikeService()
    app.load_settings([f"--db-url={url}", "--AISpikeService.upgrade_db=True"])
    store = app.open_store()
    assert migrations.current(store.engine) == "0002"
    store.close()


def test_the_reservation_row_has_the_reconcile_column() -> None:
    assert "missing_since" in ReservationRow.__table__.columns
