"""The spawner and the service meet only in :mod:`aispike_hub.admission` (issue #18).

Neither package imports the other; admission is one component, used in-process by the hub or
behind the service's REST API.  The old paths (``service/admission.py``, ``service/client.py``,
``spawner/admission.py``) are gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "aispike_hub"

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
        for name in _imports(path)
        if name == f"aispike_hub.{forbidden}" or name.startswith(f"aispike_hub.{forbidden}.")
    }
    assert not crossing, crossing


def test_the_admission_package_imports_nothing_eagerly() -> None:
    # kube/claims.py (pure) uses the codec: importing it must not pull in the controller.
    assert _imports(PACKAGE / "admission" / "__init__.py") == set()
    assert _imports(PACKAGE / "admission" / "wire.py") <= {
        "__future__", "enum", "collections.abc", "dataclasses", "typing", "aispike_hub.model"}


def test_the_old_paths_are_gone() -> None:
    for old in ("service/admission.py", "service/client.py", "spawner/admission.py"):
        assert not (PACKAGE / old).exists(), old


def test_no_module_cites_the_design_document_that_is_not_in_the_repository() -> None:
    # issue 18: docs/architecture.md (and the docs it links) replace it
    citing = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
              if "DESIGN.md" in p.read_text()]
    assert not citing, citing
