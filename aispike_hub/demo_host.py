"""What ``aispike-hub demo`` checks and prepares on this machine before it starts anything.

- **Ports**: every port the demo will bind is tried first, so a port in use is reported at once
  with the flag that changes it (not a minute later as a hub that did not start).
- **Private files**: the hub's secrets (service token, admin password, cookie secret, the
  configs that hold them, the databases) are written mode 0600 in a 0700 directory.
- **The users' Python**: run as root, each user's server runs as a system user of its own, who
  must be able to run Python with this environment's packages.  When this interpreter lives
  where other users cannot go (a pyenv under ``/root``), a small virtual environment of an
  interpreter of the same version that they can run is made, which reads this environment's
  packages (read-only) through a ``.pth`` file.
"""

from __future__ import annotations

import errno
import os
import shutil
import site
import socket
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PortUse:
    """One port the demo binds: what for, and the command-line flag that sets it."""

    port: int
    what: str
    flag: str


def port_problem(ip: str, port: int) -> str:
    """Why ``ip:port`` cannot be listened on now; empty when it can.

    The probe binds with ``SO_REUSEADDR`` as the hub and the proxy do, so a port held only by
    connections closing down (TIME_WAIT) counts as free, and one with a listener does not.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            s.listen(1)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "already in use"
            if e.errno == errno.EACCES:
                return "not allowed (ports under 1024 need root)"
            if e.errno == errno.EADDRNOTAVAIL:
                return f"not available ({ip} is not an address of this machine)"
            return e.strerror or str(e)
    return ""


def port_errors(uses: Sequence[tuple[str, PortUse]]) -> list[str]:
    """One sentence per port of ``uses`` (``(ip, use)``) that cannot be bound, or is twice."""
    errors = []
    seen: dict[int, PortUse] = {}
    for ip, use in uses:
        if use.port in seen:
            errors.append(f"port {use.port} is given twice ({seen[use.port].what} and "
                          f"{use.what}): choose another with {use.flag}=<port>")
            continue
        seen[use.port] = use
        problem = port_problem(ip, use.port)
        if problem:
            errors.append(f"port {use.port} on {ip} ({use.what}) is {problem}: stop what uses it, "
                          f"or choose another with {use.flag}=<port> ({use.flag}=0: any free "
                          "port)")
    return errors


def free_port(ip: str = "127.0.0.1") -> int:
    """A port free on ``ip`` now."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def log_tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` whole lines of a log (never a line cut in the middle)."""
    return "\n".join(text.splitlines()[-lines:])


# -- private files --------------------------------------------------------------------------

def private_dir(path: Path) -> None:
    """``path`` exists, is this user's and mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` into ``path``, mode 0600 from the start (also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def make_private(paths: Iterable[Path]) -> None:
    """chmod 0600 the files of ``paths`` that exist (what the hub and the service wrote)."""
    for path in paths:
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)


# -- what other users can reach ---------------------------------------------------------------

def blocked_for_others(path: str | Path, read: bool = False) -> str:
    """The first directory on the way to ``path`` that other users cannot pass; empty if none.

    Other users need search (x) on every directory above ``path``; ``read``: also read and
    search on ``path`` itself (a directory of packages) or execute on it (an interpreter).
    """
    real = Path(os.path.realpath(path))
    for parent in reversed(real.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return str(parent)
    mode = real.stat().st_mode
    need = (stat.S_IROTH | stat.S_IXOTH) if read or real.is_dir() else stat.S_IXOTH
    return "" if mode & need == need else str(real)


def site_dirs() -> list[str]:
    """This environment's package directories (a virtual environment's, or the system's)."""
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    user = site.getusersitepackages()
    if site.ENABLE_USER_SITE and os.path.isdir(user):
        dirs.append(user)
    return dirs


def python_for_others(target: Path, extra_paths: Sequence[str] = ()) -> tuple[str, str]:
    """An interpreter other users can run with this environment's packages, and how it was found.

    This one when they can reach it and its packages; else a virtual environment in ``target``
    of an interpreter of the same version they can run, whose ``.pth`` file adds this
    environment's package directories (``extra_paths`` must be reachable too).  Raises
    ``SystemExit`` saying what blocks them when neither works.
    """
    needed = [*site_dirs(), *extra_paths]
    blocked_packages = [(d, b) for d in needed if (b := blocked_for_others(d, read=True))]
    if blocked_packages:
        where, what = blocked_packages[0]
        raise SystemExit(
            f"aispike-hub demo: run as root, each user's server runs as a system user of its "
            f"own, who cannot read {where} ({what} is closed to other users). Install AISpike "
            "Hub in an environment other users can read (e.g. under /opt), or run the demo as "
            "a normal user (then every server runs as you).")
    if not blocked_for_others(sys.executable):
        return sys.executable, "this environment's Python"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [shutil.which(f"python{version}", path=d) for d in
                  ("/usr/local/bin", "/usr/bin", "/bin", "/opt/python/bin")]
    for base in dict.fromkeys(c for c in candidates if c):
        if blocked_for_others(base) or not _same_version(base, version):
            continue
        python = target / "bin" / "python"
        if not python.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([base, "-m", "venv", "--without-pip", str(target)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        lib = target / "lib" / f"python{version}" / "site-packages"
        lib.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs())
        (lib / "aispike-hub-demo.pth").write_text(lines)
        for here, dirs, files in os.walk(target):
            for name in [*dirs, *files]:
                p = os.path.join(here, name)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (
                        stat.S_IXOTH if os.path.isdir(p) else 0))
        os.chmod(target, 0o755)
        return str(python), (f"{base} with this environment's packages ({sys.executable} is "
                             f"closed to other users: {blocked_for_others(sys.executable)})")
    raise SystemExit(
        f"aispike-hub demo: run as root, each user's server runs as a system user of its own, "
        f"who cannot run {sys.executable} ({blocked_for_others(sys.executable)} is closed to "
        f"other users) and no python{version} they can run was found. Install AISpike Hub with "
        "a Python other users can run, or run the demo as a normal user.")


def _same_version(python: str, version: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == version
