"""The lab extension's frontend unit tests (vitest), run by the README's `python -m pytest`.

.ci/run installs labextension/node_modules with `npm ci` and builds the extension; here
`npm test` runs the TypeScript tests.  Without node_modules the test skips, except under CI=true,
where it fails: a CI run that skipped the frontend proved nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tools import unavailable

LABEXTENSION = Path(__file__).parents[3] / "labextension"


def test_frontend_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    missing = ("npm is not installed" if npm is None else
               "labextension/node_modules missing: run `npm ci` in labextension/"
               if not (LABEXTENSION / "node_modules" / ".bin" / "vitest").exists() else "")
    if missing:
        unavailable(missing)
    assert npm is not None
    run = subprocess.run([npm, "test", "--silent"], cwd=LABEXTENSION, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "CI": "true"})
    assert run.returncode == 0, f"npm test failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert " passed" in run.stdout
