"""The dispatcher with real agent processes in the real sandbox (bubblewrap if installed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from clrk import config, envelope
from clrk.errors import Conflict
from clrk.manifest import TaskAgent
from clrk.runtime.dispatcher import Dispatcher
from clrk.runtime.inbox import Claim, Inbox
from clrk.runtime.ingress import create_app
from support import serve, wait_for

Make = Callable[..., TaskAgent]

# Appends one JSON line per start/end to $CLRK_DATA_DIR/log (O_APPEND: whole lines even
# with several writers), optionally waits for a gate file, then echoes what it saw.
LOGGING_AGENT = """
import json, os, sys, time
raw = json.loads(sys.stdin.read())
events = raw if isinstance(raw, list) else [raw]
data = os.environ["CLRK_DATA_DIR"]
ns = [event["data"].get("n") for event in events]
def log(kind):
    line = json.dumps({"kind": kind, "key": os.environ["CLRK_PARTITION_KEY"], "ns": ns,
                       "inv": os.environ["CLRK_INVOCATION_ID"]}) + "\\n"
    fd = os.open(os.path.join(data, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(fd, line.encode())
    os.close(fd)
log("start")
gate = events[0]["data"].get("gate")
if gate:
    open(os.path.join(data, "started-" + gate), "w").close()
    while not os.path.exists(os.path.join(data, "release-" + gate)):
        time.sleep(0.01)
time.sleep(events[0]["data"].get("sleep", 0))
log("end")
print(json.dumps({"ns": ns}))
"""


def data_dir(name: str) -> Path:
    return config.data_dir() / "agents" / name


def read_log(name: str) -> list[dict[str, object]]:
    path = data_dir(name) / "log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def put(inbox: Inbox, agent: TaskAgent, n: int, key: str, **data: object) -> str:
    event = envelope.new_envelope(
        {"thread": key, "n": n, **data}, agent=agent.name, event_id=f"{key}-{n}", subject=key
    )
    stored = inbox.enqueue(
        agent, event_id=f"{key}-{n}", partition_key=key, envelope=envelope.to_json(event).decode()
    )
    return stored.invocation_id


async def drain(url: str, **options: object) -> None:
    dispatcher = Dispatcher(url, poll_interval=0.02, **options)  # type: ignore[arg-type]
    await asyncio.wait_for(dispatcher.run(until_idle=True), timeout=90)


async def until(predicate: Callable[[], object], what: str) -> None:
    await asyncio.to_thread(wait_for, predicate, what)


def check_limits(log: list[dict[str, object]], max_concurrent: int) -> None:
    """Replay the start/end log: never two turns of one key, never more than the limit."""
    running: dict[str, int] = defaultdict(int)
    total = 0
    for entry in log:
        key = str(entry["key"])
        if entry["kind"] == "start":
            running[key] += 1
            total += 1
            assert running[key] == 1, f"two turns of {key} at once"
            assert total <= max_concurrent, f"{total} turns at once"
        else:
            running[key] -= 1
            total -= 1


def stateful(make_agent: Make, name: str, code: str = LOGGING_AGENT, **spec: object) -> TaskAgent:
    return make_agent(name, code, state={"backend": "sqlite"}, **spec)


async def test_fifty_events_on_five_threads_respect_both_limits(
    sqlite_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "fifty", maxConcurrent=2)
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        for n in range(50):
            put(inbox, agent, n, f"t{n % 5}", sleep=0.02)
        await drain(sqlite_url)
        rows = inbox.invocations(limit=100)
    assert {row["status"] for row in rows} == {"succeeded"} and len(rows) == 50
    log = read_log("fifty")
    assert len(log) == 100
    check_limits(log, 2)
    for key in {f"t{k}" for k in range(5)}:  # arrival order within each thread
        started = [
            entry["ns"][0] for entry in log if entry["key"] == key and entry["kind"] == "start"
        ]  # type: ignore[index]
        assert started == sorted(started)


@pytest.mark.slow
def test_two_dispatcher_processes_share_one_inbox(db_url: str, make_agent: Make) -> None:
    agent = stateful(make_agent, "shared", maxConcurrent=2)
    with Inbox.open(db_url) as inbox:
        inbox.apply(agent)
        for n in range(20):
            put(inbox, agent, n, f"t{n % 4}", sleep=0.02)
        workers = [start_dispatcher(db_url, f"w{i}", "--until-idle") for i in range(2)]
        for worker in workers:
            assert worker.wait(timeout=90) == 0, worker.stderr.read() if worker.stderr else ""
        rows = inbox.invocations(limit=100)
    assert {row["status"] for row in rows} == {"succeeded"} and len(rows) == 20
    check_limits(read_log("shared"), 2)


ENV_AGENT = """
import json, os, sys
event = json.loads(sys.stdin.read())
keys = ["CLRK_INVOCATION_ID", "CLRK_PARTITION_KEY", "CLRK_FENCE", "TRACEPARENT", "GREETING",
        "CLRK_DATA_DIR", "CLRK_TEST_SECRET"]
print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "trace": event["traceparent"]}))
"""


async def test_run_gets_clrk_variables_and_manifest_env_only(
    sqlite_url: str, make_agent: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLRK_TEST_SECRET", "hunter2")
    agent = make_agent("env", ENV_AGENT, env={"GREETING": "hello"})
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        invocation = put(inbox, agent, 1, "k1")
        await drain(sqlite_url)
        row = inbox.invocation(invocation)
    assert row is not None and row["status"] == "succeeded" and row["exit_code"] == 0
    result = json.loads(row["result"])
    assert result["env"] == {
        "CLRK_INVOCATION_ID": invocation,
        "CLRK_PARTITION_KEY": "k1",
        "CLRK_FENCE": str(row["fence"]),
        "TRACEPARENT": result["trace"],
        "GREETING": "hello",
        "CLRK_DATA_DIR": None,  # no spec.state
        "CLRK_TEST_SECRET": None,
    }


COUNTER_AGENT = """
import json, os, sys
sys.stdin.read()
path = os.path.join(os.environ["CLRK_DATA_DIR"], "count")
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
print(json.dumps({"count": n}))
"""


async def test_state_dir_is_kept_across_runs(sqlite_url: str, make_agent: Make) -> None:
    agent = stateful(make_agent, "counter", COUNTER_AGENT)
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        ids = [put(inbox, agent, n, "same-thread") for n in range(3)]
        await drain(sqlite_url)
        counts = [json.loads(inbox.invocation(i)["result"])["count"] for i in ids]  # type: ignore[index]
    assert counts == [1, 2, 3]


FLAKY_AGENT = """
import json, os, sys
sys.stdin.read()
path = os.path.join(os.environ["CLRK_DATA_DIR"], "tries")
tries = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(tries))
if tries == 1:
    print("transient failure", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"tries": tries}))
"""


async def test_failure_is_retried_with_backoff_then_succeeds(
    sqlite_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "flaky", FLAKY_AGENT, retries={"max": 2, "backoffSeconds": 0.05})
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        invocation = put(inbox, agent, 1, "k")
        await drain(sqlite_url)
        row = inbox.invocation(invocation)
    assert row is not None
    assert (row["status"], row["attempts"], json.loads(row["result"])) == (
        "succeeded",
        2,
        {"tries": 2},
    )


@pytest.mark.parametrize(
    ("code", "timeout", "reason"),
    [
        ("import sys; print('boom', file=sys.stderr); sys.exit(3)", 30, "exit code 3: boom"),
        ("import time; time.sleep(30)", 0.3, "timed out after 0.3s"),
        ("print('not json')", 30, "stdout is not JSON"),
        ("print('[1, 2]')", 30, "one JSON object"),
    ],
)
async def test_spent_retries_dead_letter_with_the_reason(
    sqlite_url: str, make_agent: Make, code: str, timeout: float, reason: str
) -> None:
    agent = make_agent(
        "failing", code, timeoutSeconds=timeout, retries={"max": 1, "backoffSeconds": 0.01}
    )
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        invocation = put(inbox, agent, 1, "k")
        await drain(sqlite_url)
        row = inbox.invocation(invocation)
    assert row is not None and row["status"] == "dead" and row["attempts"] == 2
    assert reason in row["reason"] and "after 2 attempts" in row["reason"]
    if "boom" in reason:
        assert "boom" in row["stderr_tail"] and row["exit_code"] == 3


async def test_sandbox_error_dead_letters_at_once(sqlite_url: str, make_agent: Make) -> None:
    agent = make_agent("gone", "", retries={"max": 3})
    command = ["/nonexistent/program"]
    broken = agent.model_copy(
        update={
            "spec": agent.spec.model_copy(
                update={
                    "template": agent.spec.template.model_copy(
                        update={
                            "spec": agent.spec.template.spec.model_copy(update={"command": command})
                        }
                    )
                }
            )
        }
    )
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(broken)
        invocation = put(inbox, broken, 1, "k")
        await drain(sqlite_url)
        row = inbox.invocation(invocation)
    assert row is not None and row["status"] == "dead" and row["attempts"] == 1
    assert row["reason"].startswith("sandbox: ")


async def with_dispatcher(url: str) -> tuple[Dispatcher, asyncio.Task[None]]:
    dispatcher = Dispatcher(url, poll_interval=0.02)
    return dispatcher, asyncio.create_task(dispatcher.run())


async def stop(dispatcher: Dispatcher, task: asyncio.Task[None]) -> None:
    dispatcher.stop()
    dispatcher.stop()  # idempotent
    await asyncio.wait_for(task, timeout=30)


def release(name: str, gate: str) -> None:
    (data_dir(name) / f"release-{gate}").touch()


async def test_on_busy_enqueue_runs_waiting_events_in_arrival_order(
    sqlite_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "fifo", onBusy="enqueue", maxConcurrent=4)
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        dispatcher, task = await with_dispatcher(sqlite_url)
        put(inbox, agent, 0, "t", gate="g0")
        await until(lambda: (data_dir("fifo") / "started-g0").exists(), "first run")
        for n in range(1, 4):
            put(inbox, agent, n, "t")
        release("fifo", "g0")
        await until(lambda: inbox.pending() == 0, "drain")
        await stop(dispatcher, task)
    starts = [entry["ns"] for entry in read_log("fifo") if entry["kind"] == "start"]
    assert starts == [[0], [1], [2], [3]]


async def test_on_busy_coalesce_batches_waiting_events(sqlite_url: str, make_agent: Make) -> None:
    agent = stateful(make_agent, "batch", onBusy="coalesce")
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        dispatcher, task = await with_dispatcher(sqlite_url)
        put(inbox, agent, 0, "t", gate="g0")
        await until(lambda: (data_dir("batch") / "started-g0").exists(), "first run")
        later = [put(inbox, agent, n, "t") for n in range(1, 4)]
        release("batch", "g0")
        await until(lambda: inbox.pending() == 0, "drain")
        await stop(dispatcher, task)
        statuses = [inbox.invocation(i)["status"] for i in later]  # type: ignore[index]
    starts = [entry["ns"] for entry in read_log("batch") if entry["kind"] == "start"]
    assert starts == [[0], [1, 2, 3]]  # one run for everything that waited
    assert statuses == ["succeeded", "coalesced", "coalesced"]


async def test_on_busy_reject_refuses_while_a_turn_is_in_flight(
    sqlite_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "rejecting", onBusy="reject")
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        dispatcher, task = await with_dispatcher(sqlite_url)
        with serve(create_app(sqlite_url)) as base:
            first = await asyncio.to_thread(
                httpx.post,
                base,
                json={"thread": "t", "n": 0, "gate": "g0"},
                headers={"X-Clrk-TaskAgent": "rejecting"},
            )
            await until(lambda: (data_dir("rejecting") / "started-g0").exists(), "first run")
            second = await asyncio.to_thread(
                httpx.post,
                base,
                json={"thread": "t", "n": 1},
                headers={"X-Clrk-TaskAgent": "rejecting"},
            )
        release("rejecting", "g0")
        await until(lambda: inbox.pending() == 0, "drain")
        await stop(dispatcher, task)
        rejected = inbox.invocation(second.json()["invocation_id"])
    assert first.status_code == 202 and second.status_code == 202
    assert second.json()["status"] == "rejected"
    assert rejected is not None and rejected["status"] == "rejected"
    assert [entry["ns"] for entry in read_log("rejecting") if entry["kind"] == "start"] == [[0]]


async def test_on_busy_interrupt_reruns_the_cancelled_turn_with_the_newer_event(
    sqlite_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "interrupting", onBusy="interrupt")
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        dispatcher, task = await with_dispatcher(sqlite_url)
        first = put(inbox, agent, 0, "t", gate="g0")  # waits until released
        await until(lambda: (data_dir("interrupting") / "started-g0").exists(), "first run")
        second = put(inbox, agent, 1, "t")

        def starts() -> list[object]:
            return [e["ns"] for e in read_log("interrupting") if e["kind"] == "start"]

        await until(lambda: len(starts()) == 2, "the run after the interrupt")
        release("interrupting", "g0")
        await until(lambda: inbox.pending() == 0, "drain")
        await stop(dispatcher, task)
        old, new = inbox.invocation(first), inbox.invocation(second)
    assert starts() == [[0], [0, 1]], "the interrupted event runs again, with the newer one"
    ended = [entry["ns"] for entry in read_log("interrupting") if entry["kind"] == "end"]
    assert ended == [[0, 1]]  # the interrupted turn never reached its end (nothing committed)
    assert old is not None and old["status"] == "succeeded" and old["attempts"] == 2
    assert new is not None and new["status"] == "coalesced" and new["coalesced_into"] == first


async def test_sync_mode_answers_with_the_agents_stdout(sqlite_url: str, make_agent: Make) -> None:
    agent = stateful(make_agent, "synchronous", mode="sync")
    with Inbox.open(sqlite_url) as inbox:
        inbox.apply(agent)
        dispatcher, task = await with_dispatcher(sqlite_url)
        with serve(create_app(sqlite_url)) as base:
            response = await asyncio.to_thread(
                httpx.post,
                base,
                json={"thread": "t", "n": 7},
                headers={"X-Clrk-TaskAgent": "synchronous"},
                timeout=60,
            )
        await stop(dispatcher, task)
    assert response.status_code == 200
    assert response.json() == {"ns": [7]}
    assert response.headers["x-clrk-invocation-id"].startswith("inv_")


def start_dispatcher(url: str, worker: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clrk.runtime.commands",
            "dispatcher",
            "--db",
            url,
            "--worker-id",
            worker,
            "--poll-interval",
            "0.02",
            "--lease-seconds",
            "1",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


@pytest.mark.slow
def test_sigkill_mid_turn_loses_nothing_and_fences_the_dead_turn(
    db_url: str, make_agent: Make
) -> None:
    agent = stateful(make_agent, "crashy", retries={"max": 3, "backoffSeconds": 0.05})
    with Inbox.open(db_url) as inbox:
        inbox.apply(agent)
        invocation = put(inbox, agent, 0, "t", gate="g0")
        first = start_dispatcher(db_url, "doomed")
        try:
            wait_for(lambda: (data_dir("crashy") / "started-g0").exists(), "the first turn")
            dead_turn = inbox.invocation(invocation)
            assert dead_turn is not None and dead_turn["lease_owner"] == "doomed"
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        release("crashy", "g0")
        second = start_dispatcher(db_url, "survivor", "--until-idle")
        assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
        row = inbox.invocation(invocation)
        assert row is not None and row["status"] == "succeeded"
        assert row["attempts"] == 2 and row["fence"] > dead_turn["fence"]
        # The dead turn's late write is refused by its fence and changes nothing.
        stale = Claim(
            id=invocation,
            agent=agent,
            partition_key="t",
            fence=dead_turn["fence"],
            attempt=1,
            envelopes=[],
            member_ids=[invocation],
        )
        with pytest.raises(Conflict):
            inbox.finish(stale, "dead", reason="late")
        assert inbox.invocation(invocation)["status"] == "succeeded"  # type: ignore[index]
