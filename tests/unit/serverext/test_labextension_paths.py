"""The lab extension's paths point at the npm build's output (``aispike_hub/labextension``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

import aispike_hub
import aispike_hub.serverext

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("module", [aispike_hub, aispike_hub.serverext])
def test_labextension_paths_name_the_build_output(module: ModuleType) -> None:
    (entry,) = module._jupyter_labextension_paths()
    base = Path(str(module.__file__)).parent
    assert (base / entry["src"]).resolve() == (REPO / "aispike_hub" / "labextension").resolve()
    package = json.loads((REPO / "labextension" / "package.json").read_text())
    assert entry["dest"] == package["name"]
    out = (REPO / "labextension" / package["jupyterlab"]["outputDir"]).resolve()
    assert out == (base / entry["src"]).resolve()
