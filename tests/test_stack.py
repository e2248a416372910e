"""The local stack notices a server that died and says how, in words."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clrk.stack import LocalStack, StackError


def test_a_killed_server_is_reported_by_signal_name_with_its_log(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, tmp_path / "agent.yaml")
    stack.logs.mkdir(parents=True)
    (stack.logs / "dispatcher.log").write_text("claimed inv_1\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stack.procs["dispatcher"] = proc
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(StackError) as info:
        stack.check_alive()
    assert "dispatcher was killed by SIGKILL" in str(info.value)
    assert "claimed inv_1" in str(info.value)


def test_a_server_that_exits_is_reported_with_its_code(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, tmp_path / "agent.yaml")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    stack.procs["ingress"] = proc
    with pytest.raises(StackError, match="ingress exited with code 3"):
        stack.check_alive()


def test_a_second_stack_on_a_running_folder_is_refused(tmp_path: Path) -> None:
    """Bug: a second `clrk up` on the same folder re-applied the agent with its own
    emulator (taking the first stack's replies) and, stopping, removed its stack.json."""
    from clrk.stack import STACK_FILE, StackInfo

    example = Path(__file__).resolve().parents[1] / "examples" / "slack-thread" / "agent.yaml"
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = StackInfo(
            home=str(tmp_path),
            emulator_url="http://127.0.0.1:1",
            proxy_url="http://127.0.0.1:2",
            ingress_url="http://127.0.0.1:3",
            runtime_url=f"sqlite:///{tmp_path / 'runtime.db'}",
            agent="slack-thread-agent",
            bot_token="xoxb-x",
            pid=first.pid,
        )
        running.save()
        second = LocalStack(tmp_path, example)
        with pytest.raises(StackError, match=f"already running in .* \\(pid {first.pid}"):
            second.start()
        second.stop()
        assert StackInfo.load(tmp_path) == running, "the first stack's file is left alone"
        assert not (tmp_path / "logs").exists()
    finally:
        first.kill()
        first.wait()
    assert (tmp_path / STACK_FILE).exists()
