"""The local stack: Slack emulator, auth proxy, ingress and dispatcher as real processes.

``clrk demo``, ``clrk up`` and the end-to-end tests start the same four servers the same way
a user would, each with its own ``python -m clrk ...`` command line, talking real HTTP on
loopback ports, all sharing one data directory (SQLite files: the embedded defaults). The
running stack is described in ``<home>/stack.json`` so that other commands
(``clrk slack say``) can find it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from clrk.config import RUNTIME_DB
from clrk.errors import ClrkError
from clrk.manifest import TaskAgent, load_manifest

HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 30.0
STACK_FILE = "stack.json"
# The emulated workspace: the same invented ids as the Slack fixtures.
TEAM_ID = "T07ZK4QW9PL"
BOT_USER_ID = "U07ZN3CDV8X"
BOT_ID = "B07ZN3CDUQ4"
SLACK_EVENTS_PATH = "/slack/events"
ALICE = "U05HX8T2LMQ"
BOB = "U06BQ7RZ3KD"
NAMES = {ALICE: "alice", BOB: "bob", BOT_USER_ID: "thread-agent"}


def readable(text: str) -> str:
    """Slack shows ``<@U…>`` as the person's name; do the same for the emulated people."""
    for user, name in NAMES.items():
        text = text.replace(f"<@{user}>", f"@{name}")
    return text


class StackError(ClrkError):
    """A server of the local stack did not start or stopped unexpectedly."""


def free_port() -> int:
    """A port the OS considers free right now (a tiny race with other programs is accepted)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise StackError(f"{name} did not listen on port {port} in time:\n{tail(log)}")


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the stack's process dies, even by SIGKILL.

    Runs in the child between fork and exec. Elsewhere it does nothing: there, ``stop()``
    (on exit or on SIGTERM) is what ends the servers.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _ended(returncode: int) -> str:
    """How a server ended, in words: "was killed by SIGKILL" rather than "-9"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class StackInfo:
    """What a client needs to talk to a running stack (saved as ``stack.json``)."""

    home: str
    emulator_url: str
    proxy_url: str
    ingress_url: str
    runtime_url: str
    agent: str
    bot_token: str
    team_id: str = TEAM_ID
    bot_user_id: str = BOT_USER_ID
    pid: int = 0  # of the `clrk up` (or demo) process that runs the stack

    @property
    def slack_api_url(self) -> str:
        return f"{self.emulator_url}/api/"

    def save(self) -> None:
        (Path(self.home) / STACK_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, home: Path) -> StackInfo:
        path = home / STACK_FILE
        if not path.exists():
            raise StackError(f"no running stack found in {home} (start one with: clrk up)")
        return cls(**json.loads(path.read_text()))


def refuse_a_running_stack(home: Path) -> None:
    """One stack per folder: a second would re-apply the agent with its own emulator and
    take the first one's replies, and its stop (or a demo emptying the folder) would pull
    the first one's files away."""
    try:
        running = StackInfo.load(home)
    except (StackError, OSError, ValueError, TypeError):
        return  # none, or a file left by a stack that did not stop cleanly
    if running.pid and running.pid != os.getpid() and alive(running.pid):
        raise StackError(
            f"a stack is already running in {home} (pid {running.pid}, emulator "
            f"{running.emulator_url}); stop it first, or give another --home"
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


class LocalStack:
    """Starts and stops the four servers; use as a context manager."""

    def __init__(self, home: Path, manifest: Path) -> None:
        self.home = home.resolve()
        self.manifest = manifest
        self.logs = self.home / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.info: StackInfo | None = None
        self._secret = secrets.token_hex(16)
        self._token = f"xoxb-emulator-{secrets.token_hex(8)}"

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CLRK_HOME": str(self.home),
                "SLACK_SIGNING_SECRET": self._secret,
                "SLACK_BOT_TOKEN": self._token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, name: str, args: list[str], port: int | None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clrk", *args],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        if port is not None:
            _wait_for_port(port, proc, name, log)

    def start(self) -> StackInfo:
        agent = self._load_agent()
        refuse_a_running_stack(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("emulator", "proxy", "ingress")}
        urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
        runtime = f"sqlite:///{self.home / RUNTIME_DB}"
        self.info = StackInfo(
            home=str(self.home),
            emulator_url=urls["emulator"],
            proxy_url=urls["proxy"],
            ingress_url=urls["ingress"],
            runtime_url=runtime,
            agent=agent.name,
            bot_token=self._token,
            pid=os.getpid(),
        )
        try:
            self._apply(self.info, agent)
            self._spawn(
                "ingress",
                ["ingress", "--port", str(ports["ingress"]), "--db", runtime],
                ports["ingress"],
            )
            # Agent runs are batch work on this one host: at a lower CPU priority they leave
            # the proxy and ingress free to acknowledge Slack quickly (see bench/dispatch.py).
            self._spawn("dispatcher", ["dispatcher", "--db", runtime, "--nice", "10"], None)
            self._spawn(
                "proxy",
                [
                    "slack",
                    "proxy",
                    "--port",
                    str(ports["proxy"]),
                    "--ingress-url",
                    urls["ingress"],
                    "--agent",
                    agent.name,
                ],
                ports["proxy"],
            )
            self._spawn(
                "emulator",
                [
                    "slack",
                    "emulator",
                    "--port",
                    str(ports["emulator"]),
                    "--request-url",
                    urls["proxy"] + SLACK_EVENTS_PATH,
                ],
                ports["emulator"],
            )
        except BaseException:
            self.stop()
            raise
        self.info.save()
        return self.info

    def _load_agent(self) -> TaskAgent:
        """The manifest, validated before anything starts (errors name the field)."""
        return load_manifest(self.manifest)

    def _apply(self, info: StackInfo, agent: TaskAgent) -> None:
        """Apply the manifest with the stack's Slack settings added to the agent's env.

        The example manifest cannot know the emulator's port, so the stack writes a copy
        with ``SLACK_API_URL`` and friends set, then applies it like a user would.
        """
        doc = agent.to_dict()
        spec = doc["spec"]["template"]["spec"]
        env = [e for e in spec.get("env") or [] if not e["name"].startswith("SLACK_")]
        env += [
            {"name": "SLACK_API_URL", "value": info.slack_api_url},
            {"name": "SLACK_BOT_TOKEN", "value": info.bot_token},
            {"name": "SLACK_BOT_USER_ID", "value": BOT_USER_ID},
            {"name": "SLACK_BOT_ID", "value": BOT_ID},
        ]
        spec["env"] = env
        rendered = self.home / "applied-agent.yaml"
        rendered.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "clrk", "apply", "-f", str(rendered), "--db", info.runtime_url],
            env=self._env(),
            capture_output=True,
            text=True,
            cwd=self.home,
        )
        if result.returncode != 0:
            raise StackError(f"clrk apply failed:\n{result.stdout}{result.stderr}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"{name} {_ended(proc.returncode)}; the end of its log:\n"
                    f"{tail(self.logs / f'{name}.log') or '(empty)'}"
                )

    def stop(self) -> None:
        """Terminate every server (SIGTERM, then SIGKILL after a grace period); idempotent."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
        self.procs.clear()
        if self.info is not None and self.info.pid == os.getpid():  # only our own file
            with contextlib.suppress(OSError):
                (self.home / STACK_FILE).unlink()
