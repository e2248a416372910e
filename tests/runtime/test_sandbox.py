"""The sandbox, with real processes: bubblewrap where installed, and the plain fallback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from runtime_helpers import agent_python

from clrk.errors import SandboxError
from clrk.runtime import _mounts
from clrk.runtime.sandbox import RunResult, RunSpec, Sandbox, choose_sandbox
from support import need_server

HAS_BWRAP = shutil.which("bwrap") is not None


@pytest.fixture(params=["bwrap", "subprocess"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    if request.param == "bwrap" and not HAS_BWRAP:
        need_server("bubblewrap", "bwrap is not installed (CI installs it)")
    return choose_sandbox(request.param)


@pytest.fixture
def bwrap() -> Sandbox:
    if not HAS_BWRAP:
        need_server("bubblewrap", "bwrap is not installed (CI installs it)")
    return choose_sandbox("bwrap")


async def run(sandbox: Sandbox, code: str, **options: object) -> RunResult:
    spec = RunSpec(
        command=[agent_python(), "-c", code],
        env=options.pop("env", {}),  # type: ignore[arg-type]
        stdin=options.pop("stdin", b""),  # type: ignore[arg-type]
        timeout_seconds=options.pop("timeout_seconds", 20),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )
    return await sandbox.run(spec)


def output(result: RunResult) -> dict[str, object]:
    assert result.exit_code == 0, result.stderr_tail.decode()
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def test_stdin_in_stdout_out_and_exit_code(sandbox: Sandbox) -> None:
    result = await run(
        sandbox, "import sys, json; print(json.dumps({'got': sys.stdin.read()}))", stdin=b"hello"
    )
    assert output(result) == {"got": "hello"}
    failed = await run(sandbox, "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    assert failed.exit_code == 3 and b"boom" in failed.stderr_tail and not failed.ok


async def test_a_file_written_to_tmp_is_gone_in_the_next_run(sandbox: Sandbox) -> None:
    write = (
        "import os, json, tempfile; d = tempfile.gettempdir(); "
        "open(os.path.join(d, 'left-behind'), 'w').write('x'); print(json.dumps({'dir': d}))"
    )
    first = output(await run(sandbox, write))
    check = (
        "import os, json, tempfile; "
        "p = os.path.join(tempfile.gettempdir(), 'left-behind'); "
        "print(json.dumps({'there': os.path.exists(p)}))"
    )
    assert output(await run(sandbox, check)) == {"there": False}
    if sandbox.kind == "subprocess":
        assert not os.path.exists(str(first["dir"]))  # the fresh temp dir was removed


async def test_runtime_secret_is_absent_and_manifest_env_present(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLRK_TEST_SECRET", "hunter2")
    result = await run(
        sandbox, "import os, json; print(json.dumps(dict(os.environ)))", env={"GIVEN": "yes"}
    )
    env = output(result)
    assert "CLRK_TEST_SECRET" not in env and "hunter2" not in json.dumps(env)
    assert env["GIVEN"] == "yes"
    assert set(env) <= {"GIVEN", "PATH", "HOME", "LANG", "TMPDIR", "PWD"}


async def test_bwrap_cannot_write_outside_its_tmpfs(bwrap: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "readonly-target"
    target.mkdir()
    target.chmod(0o777)  # writable for anyone on the host: only the sandbox stops it
    code = f"""
import json, os
results = {{}}
for path in ["/usr/clrk-x", "/etc/clrk-x", "/clrk-x", "{target}/clrk-x", "/tmp/ok"]:
    try:
        open(path, "w").write("x")
        results[path] = "written"
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
"""
    script = tmp_path / "probe.py"
    script.write_text(code)
    script.chmod(0o644)
    spec = RunSpec(
        command=[agent_python(), str(script)],
        env={},
        stdin=b"",
        timeout_seconds=20,
        working_dir=str(target),
    )
    results = output(await bwrap.run(spec))
    assert results.pop("/tmp/ok") == "written"
    assert all(value != "written" for value in results.values()), results
    assert not (target / "clrk-x").exists()


async def test_bwrap_runs_unprivileged_in_its_own_pid_namespace(bwrap: Sandbox) -> None:
    info = output(
        await run(bwrap, "import os, json; print(json.dumps([os.getuid(), os.getpid()]))")
    )
    uid, pid = info  # type: ignore[misc]
    assert uid != 0
    assert pid < 10  # numbered inside its own PID namespace


async def test_state_dir_is_writable_and_kept(sandbox: Sandbox, tmp_path: Path) -> None:
    data = sandbox.prepare_data_dir(tmp_path / "state")
    code = (
        "import os, json; p = os.path.join(os.environ['CLRK_DATA_DIR'], 'n'); "
        "n = int(open(p).read()) + 1 if os.path.exists(p) else 1; open(p, 'w').write(str(n)); "
        "print(json.dumps({'n': n}))"
    )
    env = {"CLRK_DATA_DIR": str(data)}
    assert output(await run(sandbox, code, env=env, data_dir=str(data))) == {"n": 1}
    assert output(await run(sandbox, code, env=env, data_dir=str(data))) == {"n": 2}


async def test_timeout_kills_the_whole_tree(sandbox: Sandbox, tmp_path: Path) -> None:
    data = sandbox.prepare_data_dir(tmp_path / "state")
    marker = data / "grandchild-survived"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5); open({str(marker)!r}, 'w')"])
time.sleep(60)
"""
    result = await run(sandbox, code, timeout_seconds=0.5, data_dir=str(data))
    assert result.timed_out and not result.ok
    time.sleep(2.0)  # past the moment the grandchild would have written
    assert not marker.exists()


async def test_network_none_has_no_route_to_host_services(bwrap: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    code = (
        "import socket, json\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close(); r = 'connected'\n"
        "except OSError as exc:\n"
        "    r = type(exc).__name__\n"
        "print(json.dumps(r))"
    )
    try:
        assert output(await run(bwrap, code, network="host")) == "connected"
        assert output(await run(bwrap, code, network="none")) != "connected"
    finally:
        listener.close()


def test_unreachable_path_names_the_chmod_to_run(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    interpreter = closed / "inner" / "python"
    interpreter.write_text("")
    interpreter.chmod(0o755)
    closed.chmod(0o700)
    with pytest.raises(SandboxError) as info:
        _mounts.check_reachable([str(interpreter)], 65534, 65534)
    assert f"chmod o+x {closed}" in str(info.value)
    closed.chmod(0o755)
    _mounts.check_reachable([str(interpreter)], 65534, 65534)


def test_python_means_clrks_interpreter_and_paths_are_not_nested() -> None:
    import sys

    command = _mounts.resolve_command(["python", "-m", "x"], None)
    assert command[0] == sys.executable
    paths = _mounts.read_only_paths(command, None)
    assert sys.prefix in paths or any(sys.prefix.startswith(p + "/") for p in paths)
    assert not any(a != b and a.startswith(b + "/") for a in paths for b in paths)
    with pytest.raises(SandboxError):
        _mounts.resolve_command(["no-such-program-clrk"], None)


async def test_missing_program_is_a_sandbox_error(sandbox: Sandbox) -> None:
    spec = RunSpec(command=["/nonexistent/agent"], env={}, stdin=b"", timeout_seconds=5)
    with pytest.raises(SandboxError) as info:
        await sandbox.run(spec)
    assert "/nonexistent/agent" in str(info.value)


def test_auto_falls_back_when_bubblewrap_cannot_reach_python(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`auto` degrades to a warned plain subprocess; an explicit `bwrap` never does."""
    if not HAS_BWRAP:
        need_server("bubblewrap", "bwrap is not installed (CI installs it)")
    monkeypatch.setattr(Sandbox, "python_problem", lambda self: "uid 65534 cannot reach /x")
    assert choose_sandbox("auto").kind == "subprocess"
    assert "cannot reach /x" in caplog.text and "weak isolation" in caplog.text
    assert choose_sandbox("bwrap").kind == "bwrap"


async def test_missing_working_dir_is_named_as_the_cause(sandbox: Sandbox, tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    spec = RunSpec(
        command=[agent_python(), "-c", "print('{}')"],
        env={},
        stdin=b"",
        timeout_seconds=20,
        working_dir=str(missing),
    )
    with pytest.raises(SandboxError) as info:
        await sandbox.run(spec)
    message = str(info.value)
    assert f"working directory {missing} does not exist" in message
    assert "workingDir" in message
    assert "cannot start" not in message  # not blamed on the (present) interpreter
