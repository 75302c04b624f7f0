"""Build hook: one clear sentence when the lab extension must be built and Node.js is missing.

Runs before hatch-jupyter-builder's hook (pyproject.toml lists it first). Without it a wheel
built where npm is absent ends in a traceback of the npm builder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUILT = "aispike_hub/labextension/static/style.js"


class LabExtensionToolsHook(BuildHookInterface):  # type: ignore[type-arg, misc, unused-ignore]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel", "sdist") or (Path(self.root) / BUILT).exists():
            return
        missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise SystemExit(
                f"aispike-hub: building the lab extension (labextension/) needs Node.js 20 or "
                f"newer with npm, and {' and '.join(missing)} {verb} not on PATH: install Node.js "
                f"(apt-get install nodejs npm), or install a built wheel."
            )
