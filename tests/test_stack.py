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
