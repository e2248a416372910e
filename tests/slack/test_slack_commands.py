"""`clrk slack emulator` and `clrk slack proxy` as a user runs them: real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from clrk.errors import ConfigError
from clrk.slack.commands import parse_routes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _run(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clrk", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def test_emulator_and_proxy_run_from_the_command_line() -> None:
    emulator_port, proxy_port = _free_port(), _free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    env = {"SLACK_SIGNING_SECRET": "cli-secret", "SLACK_BOT_TOKEN": "xoxb-cli-token"}
    with (
        _run(
            [
                "slack",
                "proxy",
                "--port",
                str(proxy_port),
                "--agent",
                "a",
                "--ingress-url",
                "http://127.0.0.1:9",
            ],
            env,
        ) as proxy,
        _run(
            [
                "slack",
                "emulator",
                "--port",
                str(emulator_port),
                "--request-url",
                proxy_url + "/slack/events",
                "--max-retries",
                "0",
            ],
            env,
        ) as emu,
    ):
        _wait_healthy(proxy_url, proxy)
        _wait_healthy(emulator_url, emu)
        auth = httpx.post(
            emulator_url + "/api/auth.test", headers={"Authorization": "Bearer xoxb-cli-token"}
        ).json()
        assert auth["ok"] is True
        httpx.post(emulator_url + "/_emulator/say", json={"channel": "C1", "text": "hi"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = httpx.get(emulator_url + "/_emulator/deliveries").json()["deliveries"]
            if rows:
                break
            time.sleep(0.05)
        # Signed with the shared secret and verified; the ingress port is closed: 503.
        assert rows[0]["status"] == 503
        assert httpx.get(proxy_url + "/metrics").json()["ingress_unavailable"] == 1


def test_missing_secret_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SLACK_SIGNING_SECRET"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clrk",
            "slack",
            "proxy",
            "--agent",
            "a",
            "--port",
            str(_free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SLACK_SIGNING_SECRET" in done.stderr


def test_parse_routes() -> None:
    assert parse_routes("a", []) == "a"
    assert parse_routes(None, ["A1=x", "T1=y"]) == {"A1": "x", "T1": "y"}
    assert parse_routes("z", ["A1=x"]) == {"A1": "x", "*": "z"}
    with pytest.raises(ConfigError, match="APP_OR_TEAM=AGENT"):
        parse_routes(None, ["nonsense"])
    with pytest.raises(ConfigError, match="--agent"):
        parse_routes(None, [])
