"""Runtime benchmark, one run, one table: sandbox overhead, throughput, ingress ack latency.

    python bench/dispatch.py [--spawns 40] [--events 200] [--rate 200] [--seconds 5]

Rows, each against its anchor:

* added latency per invocation of the plain-subprocess and the bubblewrap sandbox, versus a
  bare ``python -c pass`` spawn of the same interpreter (goal: bubblewrap <= +15 ms);
* events/s end to end (HTTP ingress -> inbox -> dispatcher -> sandboxed trivial agent ->
  recorded outcome), versus sequential bare spawns per second;
* ingress ack latency p50/p99 at a steady open-loop offered load (goal: p99 < 50 ms at
  200 events/s), with the dispatcher idle and with it draining at the same time.

The ingress and the dispatcher run as separate processes (``python -m clrk.runtime.commands``),
as in production; the database is SQLite in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from clrk.manifest import load_manifest
from clrk.runtime.inbox import Inbox
from clrk.runtime.sandbox import RunSpec, Sandbox, choose_sandbox

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "examples" / "echo" / "agent.yaml"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_spawns(n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def sandbox_spawns(sandbox: Sandbox, n: int) -> list[float]:
    spec = RunSpec(command=[sys.executable, "-c", "pass"], env={}, stdin=b"", timeout_seconds=30)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await sandbox.run(spec)
        times.append((time.perf_counter() - started) * 1000)
        if result.exit_code != 0:
            raise SystemExit(f"{sandbox.kind} run failed: {result.stderr_tail.decode()}")
    return times


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clrk.runtime.commands", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("ingress did not start")


async def offered_load(base: str, rate: float, seconds: float, prefix: str) -> list[float]:
    """Open loop: a request every 1/rate s regardless of answers; ack latency of each."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def one(n: int) -> None:
            started = time.perf_counter()
            response = await client.post(
                "/",
                json={"thread": f"{prefix}-{n % 50}", "n": n},
                headers={"X-Clrk-TaskAgent": "echo", "X-Clrk-Event-Id": f"{prefix}-{n}"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise SystemExit(f"ingress answered {response.status_code}: {response.text}")

        tasks = []
        begin = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return latencies


def wait_settled(url: str, expected: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    with Inbox.open(url) as inbox:
        while time.monotonic() < deadline:
            if inbox.pending() == 0 and len(inbox.invocations(limit=expected + 1)) >= expected:
                return time.perf_counter()
            time.sleep(0.02)
    raise SystemExit("events did not settle in time")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawns", type=int, default=40)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()

    rows: list[tuple[str, str, str, str]] = []
    load_before = os.getloadavg()[0]
    bare = bare_spawns(args.spawns)
    bare_p50 = statistics.median(bare)
    rows.append(("bare `python -c pass` spawn (anchor)", f"p50 {bare_p50:.1f} ms", "1.00x", ""))
    sandboxes = [Sandbox("subprocess")]
    if shutil.which("bwrap"):
        sandboxes.append(choose_sandbox("bwrap"))
    for sandbox in sandboxes:
        times = await sandbox_spawns(sandbox, args.spawns)
        p50 = statistics.median(times)
        goal = "goal <= +15 ms: " + ("met" if p50 - bare_p50 <= 15 else "MISSED")
        rows.append(
            (
                f"{sandbox.kind} sandbox run, added latency",
                f"+{p50 - bare_p50:.1f} ms (p50 {p50:.1f}, p90 {percentile(times, 0.9):.1f})",
                f"{p50 / bare_p50:.2f}x",
                goal if sandbox.kind == "bwrap" else "",
            )
        )

    work = Path(tempfile.mkdtemp(prefix="clrk-bench-"))
    work.chmod(0o755)
    try:
        url = f"sqlite:///{work / 'runtime.db'}"
        agent = load_manifest(ECHO)
        agent = agent.model_copy(
            update={"spec": agent.spec.model_copy(update={"max_concurrent": 4})}
        )
        with Inbox.open(url) as inbox:
            inbox.apply(agent)
        env = {**os.environ, "CLRK_HOME": str(work / "home")}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ingress = start("ingress", "--db", url, "--port", str(port), env=env)
        dispatcher = None
        try:
            wait_healthy(base)
            idle = await offered_load(base, args.rate, args.seconds, "idle")
            rows.append(ack_row(f"ack at {args.rate:g} ev/s, dispatcher idle", idle))
            dispatcher = start("dispatcher", "--db", url, env=env)
            started = time.perf_counter()
            wait_settled(url, len(idle))
            drained_rate = len(idle) / (time.perf_counter() - started)
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                started = time.perf_counter()
                for n in range(args.events):
                    await client.post(
                        "/",
                        json={"thread": f"e2e-{n % 20}", "n": n},
                        headers={"X-Clrk-TaskAgent": "echo"},
                    )
            ended = wait_settled(url, len(idle) + args.events)
            rate = args.events / (ended - started)
            anchor = 1000 / bare_p50
            rows.append(
                (
                    "events/s end to end (maxConcurrent 4, trivial agent)",
                    f"{rate:.1f} ev/s (backlog drain {drained_rate:.1f} ev/s)",
                    f"{rate / anchor:.2f}x",
                    f"vs {anchor:.1f} sequential bare spawns/s",
                )
            )
            busy = await offered_load(base, args.rate, args.seconds, "busy")
            rows.append(ack_row(f"ack at {args.rate:g} ev/s, dispatcher draining", busy))
            wait_settled(url, len(idle) + args.events + len(busy))
            dispatcher.terminate()
            dispatcher.wait(timeout=60)
            dispatcher = start("dispatcher", "--db", url, "--nice", "10", env=env)
            niced = await offered_load(base, args.rate, args.seconds, "niced")
            rows.append(ack_row(f"ack at {args.rate:g} ev/s, draining at --nice 10", niced))
        finally:
            for process in (ingress, dispatcher):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    # The host is shared: a busy neighbour moves every number here, so say how busy it was.
    print(
        f"host: {os.cpu_count()} cores, 1-min load {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )


def ack_row(label: str, latencies: list[float]) -> tuple[str, str, str, str]:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return (
        label,
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (n={len(latencies)})",
        f"{p99 / 50:.2f}x goal",
        "goal p99 < 50 ms: " + ("met" if p99 < 50 else "MISSED"),
    )


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("measurement", "value", "ratio", "note")
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    asyncio.run(main())
