"""What a bubblewrap sandbox sees, and whether its unprivileged uid can reach it.

Kept apart from process supervision so that the mount plan can be read and tested alone.
The root is built from nothing: system directories and a few files of ``/etc`` read-only,
the Python environment clrk runs under read-only (so ``python -m clrk...`` works inside),
the agent's working directory and absolute path arguments read-only, a fresh ``/tmp``
tmpfs, and at most one writable directory (``spec.state``).
"""

from __future__ import annotations

import os
import shutil
import site
import stat
import sys
from pathlib import Path

from clrk.errors import SandboxError

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

# Merged-/usr systems have these as symlinks into /usr; older ones as real directories.
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only what programs need to resolve names, find certificates and users, and tell time.
_ETC_ENTRIES = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/ssl",
)
_PYTHON_NAMES = ("python", "python3")


def resolve_command(command: list[str], working_dir: str | None) -> list[str]:
    """Make the program absolute, as it will be looked up on the host.

    ``python``/``python3`` mean the interpreter clrk itself runs under, so that an agent
    such as ``python -m clrk.agents.slack_thread`` sees the same installed packages.
    """
    program = command[0]
    if program in _PYTHON_NAMES:
        program = sys.executable
    elif "/" not in program:
        found = shutil.which(program, path=SANDBOX_PATH)
        if found is None:
            raise SandboxError(f"command {program!r} not found on {SANDBOX_PATH}")
        program = found
    elif not os.path.isabs(program):
        program = os.path.join(working_dir or os.getcwd(), program)
    if not os.path.isfile(program):
        raise SandboxError(f"command {program!r} does not exist on this host")
    return [program, *command[1:]]


def python_paths() -> list[str]:
    """The interpreter's prefixes and import path: what ``python -m clrk...`` reads."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.update(site.getsitepackages())
    candidates.update(entry for entry in sys.path if entry)
    return [path for path in candidates if os.path.isdir(path)]


def read_only_paths(command: list[str], working_dir: str | None) -> list[str]:
    """Host paths bound read-only at the same place, minimal and without nesting."""
    program = command[0]
    wanted = {program, os.path.realpath(program)}
    if os.path.realpath(program) == os.path.realpath(sys.executable):
        wanted.update(python_paths())
    wanted.update(arg for arg in command[1:] if os.path.isabs(arg) and os.path.exists(arg))
    if working_dir:
        wanted.add(working_dir)
    wanted = {os.path.abspath(path) for path in wanted if os.path.exists(path)}
    covered = ("/usr", "/etc")
    ordered = sorted(wanted, key=lambda path: (len(path), path))
    kept: list[str] = []
    for path in ordered:
        if any(_inside(path, parent) for parent in (*covered, *kept)):
            continue
        kept.append(path)
    return kept


def bwrap_argv(
    command: list[str],
    *,
    read_only: list[str],
    writable: list[str],
    network: str,
    working_dir: str | None,
) -> list[str]:
    argv = ["bwrap", "--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _ETC_ENTRIES:
        argv += ["--ro-bind-try", path, path]
    # The fresh /tmp first: binds below that live under the host's /tmp (a test's temp
    # dir, say) must land on top of it, not be hidden by it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in read_only:
        argv += ["--ro-bind", path, path]
    for path in writable:
        argv += ["--bind", path, path]
    argv += ["--remount-ro", "/"]  # the root itself (a tmpfs bwrap made) becomes read-only
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    # "host" shares the host's network (127.0.0.1 services stay reachable). "none" is a
    # fresh namespace with only loopback. The egress proxy will be a third policy: a fresh
    # namespace whose only way out is the proxy's socket bound in here.
    if network == "none":
        argv.append("--unshare-net")
    argv += ["--hostname", "clrk-sandbox", "--die-with-parent", "--new-session"]
    argv += ["--cap-drop", "ALL", "--chdir", working_dir or "/tmp", "--", *command]
    return argv


def check_reachable(paths: list[str], uid: int, gid: int, *, writable: bool = False) -> None:
    """Raise ``SandboxError`` naming the first directory ``uid`` cannot pass through.

    Bubblewrap resolves bind sources with the sandbox user's rights, so a venv under a
    mode-700 home fails with a cryptic "Can't find source path". Checking the mode bits
    here (ACLs aside) turns that into a message that says which ``chmod`` fixes it.
    """
    for path in paths:
        for variant in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
            _check_one(variant, uid, gid, writable=writable)


def _check_one(path: str, uid: int, gid: int, *, writable: bool) -> None:
    parts = Path(path).parts
    current = Path(parts[0])
    closed: list[str] = []
    for part in parts[1:]:
        if not _allowed(current, uid, gid, stat.S_IXOTH):
            closed.append(str(current))
        current = current / part
    if closed:
        raise SandboxError(
            f"the sandbox user (uid {uid}) cannot reach {path}: {', '.join(closed)} "
            f"not traversable for it. Run `chmod o+x {' '.join(closed)}`, "
            "or set CLRK_SANDBOX=subprocess to run without isolation"
        )
    need = stat.S_IROTH | (stat.S_IWOTH if writable else 0)
    if current.is_dir():
        need |= stat.S_IXOTH
    if not _allowed(current, uid, gid, need):
        what = "write" if writable else "read"
        raise SandboxError(
            f"the sandbox user (uid {uid}) cannot {what} {current}: "
            f"fix its permissions (mode {stat.filemode(current.stat().st_mode)})"
        )


def _allowed(path: Path, uid: int, gid: int, other_bits: int) -> bool:
    """Would ``uid``/``gid`` (no supplementary groups) have ``other_bits``-style access?"""
    if uid == 0:
        return True
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_uid == uid:
        shift = 6
    elif info.st_gid == gid:
        shift = 3
    else:
        shift = 0
    granted = (info.st_mode >> shift) & 0o7
    return granted & other_bits == other_bits


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")
