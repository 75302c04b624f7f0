"""``aispike-hub``: one command, one subcommand per process (docs/architecture.md,
"Processes": agent, service, ...).

Minimal dispatcher: each subcommand is a module with a ``main(argv)``, imported only when chosen
so that ``aispike-hub agent`` on a GPU node does not import the hub's dependencies.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("aispike_hub.demo", "a complete hub on this machine (local GPUs or simulated)"),
    "agent": ("aispike_hub.agent.main", "node agent: GPUs, topology, per-notebook use, publishing"),
    "service": ("aispike_hub.service.app", "AISpike service: quotas, admission queue, preemption"),
    "simulate": ("aispike_hub.sim.main", "replay a GPU cluster trace through the placement core"),
}
"""Subcommand -> (module with ``main(argv)``, one line of help)."""


def package_version() -> str:
    """The installed distribution's version (the one pip reports), for every ``--version``.

    Falls back to ``aispike_hub.__version__`` when the package runs from a source tree that was
    never installed (``PYTHONPATH=.``).
    """
    try:
        return importlib.metadata.version("aispike-hub")
    except importlib.metadata.PackageNotFoundError:
        from aispike_hub import __version__

        return __version__


def usage() -> str:
    lines = ["usage: aispike-hub <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_mod, help_) in sorted(SUBCOMMANDS.items())]
    lines.append("")
    lines.append("aispike-hub <command> --help-all lists a command's settings;")
    lines.append("aispike-hub --version prints the version.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named by the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(package_version())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"aispike-hub: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
