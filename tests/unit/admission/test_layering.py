"""The spawner and the service meet only in :mod:`aispike_hub.admission` (issue #18).

Neither package imports the other; admission is one component, used in-process by the hub or
behind the service's REST API.  The old import paths are re-exports of the same objects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "aispike_hub"

PENDING: set[str] = {"spawner/kube.py", "spawner/local.py"}
"""Modules still importing the old paths (another change rewrites them); empty it when they
import from :mod:`aispike_hub.admission`."""


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.parametrize(("package", "forbidden"), [("spawner", "service"),
                                                    ("service", "spawner")])
def test_spawner_and_service_do_not_import_each_other(package: str, forbidden: str) -> None:
    crossing = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        if str(path.relative_to(PACKAGE)) not in PENDING
        for name in _imports(path)
        if name == f"aispike_hub.{forbidden}" or name.startswith(f"aispike_hub.{forbidden}.")
    }
    assert not crossing, crossing


def test_the_admission_package_imports_nothing_eagerly() -> None:
    # kube/claims.py (pure) uses the codec: importing it must not pull in the controller.
    assert _imports(PACKAGE / "admission" / "__init__.py") == set()
    assert _imports(PACKAGE / "admission" / "wire.py") <= {
        "__future__", "enum", "collections.abc", "dataclasses", "typing", "aispike_hub.model"}


def test_the_old_paths_serve_the_same_objects() -> None:
    from aispike_hub.admission import client, controller, hub, inprocess, inventory, protocol, wire
    from aispike_hub.service import admission as old_service
    from aispike_hub.service import client as old_client
    from aispike_hub.spawner import admission as old_spawner

    moved = {old_service: (controller, inventory, wire), old_client: (client, hub),
             old_spawner: (inprocess, inventory, protocol, hub)}
    for old, new_modules in moved.items():
        served = set()
        for new in new_modules:
            for name in set(old.__all__) & set(new.__all__):
                assert getattr(old, name) is getattr(new, name), (old.__name__, name)
                served.add(name)
        assert served == set(old.__all__), old.__name__
