"""A fresh sandbox per run: bubblewrap where installed, a plain subprocess otherwise.

Every run is a new process tree that reads the envelope on stdin and writes one JSON
object on stdout. With bubblewrap it runs as an unprivileged uid (bubblewrap itself is
never started as real root), in its own PID/IPC/UTS namespaces, on a minimal read-only
root with a fresh tmpfs ``/tmp`` and only the environment it is given. A timeout or a
cancellation kills the whole tree: the process group goes, and ``--die-with-parent``
plus the PID namespace take everything started inside with it.

Without bubblewrap the run is a plain subprocess with a fresh temporary directory and the
same cleared environment; a one-line warning says that isolation is weak.

:class:`RunSpec` says *what* to run and :class:`Sandbox` *how*, so that a warm-start
launcher (a template process forking each run into fresh namespaces) can become a third
implementation without changing the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from clrk.errors import ConfigError, SandboxError
from clrk.runtime import _mounts

logger = logging.getLogger(__name__)

SANDBOX_ENV = "CLRK_SANDBOX"  # auto (default) | bwrap | subprocess
SANDBOX_UID_ENV = "CLRK_SANDBOX_UID"
SANDBOX_GID_ENV = "CLRK_SANDBOX_GID"
NOBODY = 65534
MAX_STDOUT_BYTES = 16 * 1024 * 1024
STDERR_TAIL_BYTES = 4096
# After a kill, how long to wait for the pipes to close before giving up on them.
_DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class RunSpec:
    command: list[str]
    env: dict[str, str]
    stdin: bytes
    timeout_seconds: float
    network: str = "host"
    working_dir: str | None = None
    # Writable directory bound at the same path (``spec.state``); everything else is
    # read-only or gone after the run.
    data_dir: str | None = None


@dataclass
class RunResult:
    exit_code: int | None
    stdout: bytes
    stderr_tail: bytes
    duration_seconds: float
    timed_out: bool = False
    cancelled: bool = False
    stdout_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled)


@dataclass
class Sandbox:
    """Launches runs; ``kind`` is ``"bwrap"`` or ``"subprocess"``."""

    kind: str
    uid: int | None = None
    gid: int | None = None
    _checked: set[tuple[str, ...]] = field(default_factory=set, repr=False)

    def prepare_data_dir(self, path: Path) -> Path:
        """Create ``spec.state``'s directory, owned by the sandbox user so it can write."""
        path.mkdir(parents=True, exist_ok=True)
        if self.uid is not None and os.geteuid() == 0:
            os.chown(path, self.uid, self.gid if self.gid is not None else self.uid)
        return path

    def python_problem(self) -> str | None:
        """Why ``python`` (clrk's own interpreter) cannot run in this sandbox, if it cannot.

        Checked once at dispatcher start so that the operator reads the fix in the log
        before the first agent is dead-lettered for it.
        """
        if self.kind != "bwrap" or self.uid is None:
            return None
        gid = self.gid if self.gid is not None else self.uid
        try:
            _mounts.check_reachable(_mounts.python_paths(), self.uid, gid)
        except SandboxError as exc:
            return str(exc)
        return None

    async def run(self, spec: RunSpec, cancel: asyncio.Event | None = None) -> RunResult:
        """Run ``spec`` to completion, timeout or cancellation; never raises for the agent's
        own failures (those are in the result). Raises ``SandboxError`` when it cannot start.
        """
        if spec.working_dir is not None and not os.path.isdir(spec.working_dir):
            # Checked first: a missing cwd otherwise surfaces as "cannot start <python>: No
            # such file or directory", which sends the operator looking for the program.
            raise SandboxError(
                f"working directory {spec.working_dir} does not exist or is not a directory "
                "(spec.template.spec.workingDir)"
            )
        command = _mounts.resolve_command(spec.command, spec.working_dir)
        env = {"PATH": _mounts.SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", **spec.env}
        scratch: str | None = None
        if self.kind == "bwrap":
            argv = self._bwrap_argv(command, spec)
            cwd = "/"
        else:
            scratch = tempfile.mkdtemp(prefix="clrk-run-")
            env.update(HOME=scratch, TMPDIR=scratch)
            argv, cwd = command, spec.working_dir or scratch
        try:
            return await _supervise(argv, env, cwd, spec, cancel, self.uid, self.gid)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def _bwrap_argv(self, command: list[str], spec: RunSpec) -> list[str]:
        read_only = _mounts.read_only_paths(command, spec.working_dir)
        writable = [spec.data_dir] if spec.data_dir else []
        if self.uid is not None:
            key = (*read_only, "\0", *writable)
            if key not in self._checked:
                gid = self.gid if self.gid is not None else self.uid
                _mounts.check_reachable(read_only, self.uid, gid)
                _mounts.check_reachable(writable, self.uid, gid, writable=True)
                self._checked.add(key)
        return _mounts.bwrap_argv(
            command,
            read_only=read_only,
            writable=writable,
            network=spec.network,
            working_dir=spec.working_dir,
        )


def choose_sandbox(kind: str | None = None) -> Sandbox:
    """The sandbox for this host: ``CLRK_SANDBOX`` or ``kind`` = auto | bwrap | subprocess."""
    wanted = (kind or os.environ.get(SANDBOX_ENV) or "auto").lower()
    if wanted not in ("auto", "bwrap", "subprocess"):
        raise ConfigError(f"{SANDBOX_ENV}={wanted!r}: expected auto, bwrap or subprocess")
    has_bwrap = shutil.which("bwrap") is not None
    if wanted == "bwrap" and not has_bwrap:
        raise SandboxError("CLRK_SANDBOX=bwrap but bubblewrap (bwrap) is not installed")
    if wanted == "subprocess" or not has_bwrap:
        logger.warning(
            "sandbox: bubblewrap not in use, agents run as plain subprocesses (weak isolation)",
            extra={"action": "sandbox_weak"},
        )
        return Sandbox("subprocess")
    uid = gid = None
    if os.geteuid() == 0:
        # Never bubblewrap as real root: drop to an unprivileged uid first.
        uid = int(os.environ.get(SANDBOX_UID_ENV) or NOBODY)
        gid = int(os.environ.get(SANDBOX_GID_ENV) or uid)
    sandbox = Sandbox("bwrap", uid=uid, gid=gid)
    problem = sandbox.python_problem() if wanted == "auto" else None
    if problem:
        # `auto` means the best isolation this host can give: a first `clrk demo` on a
        # machine whose Python sits in a private home directory should still work, and
        # say loudly how to get the real sandbox. CLRK_SANDBOX=bwrap refuses instead.
        logger.warning(
            "sandbox: bubblewrap cannot run agents here (%s); agents run as plain "
            "subprocesses (weak isolation). Set %s=bwrap to refuse instead.",
            problem,
            SANDBOX_ENV,
            extra={"action": "sandbox_weak"},
        )
        return Sandbox("subprocess")
    return sandbox


async def _supervise(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    spec: RunSpec,
    cancel: asyncio.Event | None,
    uid: int | None,
    gid: int | None,
) -> RunResult:
    started = time.monotonic()
    credentials: dict[str, object] = {}
    if uid is not None:
        credentials = {"user": uid, "group": gid if gid is not None else uid, "extra_groups": []}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group, killed as one
            close_fds=True,
            **credentials,  # type: ignore[arg-type]
        )
    except OSError as exc:
        raise SandboxError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    stdout = _Capture(MAX_STDOUT_BYTES, keep="head")
    stderr = _Capture(STDERR_TAIL_BYTES, keep="tail")
    readers = [
        asyncio.create_task(stdout.read(process.stdout)),  # type: ignore[arg-type]
        asyncio.create_task(stderr.read(process.stderr)),  # type: ignore[arg-type]
        asyncio.create_task(_feed(process, spec.stdin)),
    ]
    exited = asyncio.create_task(process.wait())
    waiters: set[asyncio.Future[object]] = {exited}  # type: ignore[arg-type]
    cancel_wait = asyncio.create_task(cancel.wait()) if cancel is not None else None
    if cancel_wait is not None:
        waiters.add(cancel_wait)  # type: ignore[arg-type]
    timed_out = cancelled = False
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=spec.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if exited not in done:
            cancelled = cancel_wait is not None and cancel_wait in done
            timed_out = not cancelled
            _kill_tree(process)
            await exited
    except BaseException:
        # The dispatcher itself is being cancelled (stop, SIGTERM): take the run down too.
        _kill_tree(process)
        raise
    finally:
        if cancel_wait is not None:
            cancel_wait.cancel()
        await _drain(readers)
    return RunResult(
        exit_code=process.returncode,
        stdout=stdout.data(),
        stderr_tail=stderr.data(),
        duration_seconds=time.monotonic() - started,
        timed_out=timed_out,
        cancelled=cancelled,
        stdout_truncated=stdout.truncated,
    )


def _kill_tree(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _feed(process: asyncio.subprocess.Process, data: bytes) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(data)
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent exited without reading all its input; its exit code tells
    finally:
        process.stdin.close()


async def _drain(readers: list[asyncio.Task[None]]) -> None:
    """Wait for the pipes; a grandchild that escaped the kill may hold them open."""
    _, pending = await asyncio.wait(readers, timeout=_DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


class _Capture:
    """Keep the first (stdout) or last (stderr) ``limit`` bytes of a stream."""

    def __init__(self, limit: int, *, keep: str) -> None:
        self.limit = limit
        self.keep = keep
        self.buffer = bytearray()
        self.truncated = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.buffer += chunk
            if len(self.buffer) > self.limit:
                self.truncated = True
                if self.keep == "head":
                    del self.buffer[self.limit :]
                else:
                    del self.buffer[: len(self.buffer) - self.limit]

    def data(self) -> bytes:
        return bytes(self.buffer)
