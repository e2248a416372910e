"""The hard guarantees with real processes: no lost update, fencing, outbox after a crash."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clrk.errors import Conflict
from clrk.state import open_store

CHILD = str(Path(__file__).with_name("_child.py"))
pytestmark = pytest.mark.slow


def spawn(*args: str, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def test_eight_processes_fifty_turns_each_lose_no_update(store_url: str) -> None:
    open_store(store_url).close()  # schema first, so the workers race on turns only
    workers = [spawn("count", store_url, "counter", "50", f"w{i}") for i in range(8)]
    outputs = [finish(proc, timeout=120) for proc in workers]
    with open_store(store_url) as store:
        snap = store.get("counter")
    assert snap is not None
    assert snap.state["n"] == 400
    assert snap.version == 400
    assert snap.state["by"] == {f"w{i}": 50 for i in range(8)}
    assert all(out.startswith("conflicts ") for out in outputs)


def test_holder_stopped_past_its_lease_cannot_commit(store_url: str) -> None:
    open_store(store_url).close()
    holder = spawn("stall", store_url, "k", stdin=True)
    assert holder.stdout is not None and holder.stdin is not None
    ready = holder.stdout.readline().split()
    assert ready[0] == "ready", holder.stderr.read() if holder.stderr else ""
    holder.send_signal(signal.SIGSTOP)
    try:
        holder.stdin.write("go\n")  # waits in the pipe until the holder runs again
        holder.stdin.flush()
        with open_store(store_url) as store:
            while True:  # the next holder proceeds as soon as the lease has expired
                try:
                    with store.turn("k") as turn:
                        assert turn.fence > int(ready[1])
                        turn.state = {"by": "next"}
                    break
                except Conflict as exc:
                    assert exc.kind == "lease"
    finally:
        holder.send_signal(signal.SIGCONT)
    assert finish(holder).strip() == "conflict fence"
    with open_store(store_url) as store:
        snap = store.get("k")
        assert snap is not None and (snap.state, snap.version) == ({"by": "next"}, 1)
        assert store.pending_outbox() == []  # its reply is absent too


@pytest.mark.parametrize("mode", ["kill_after_commit", "kill_after_send"])
def test_killed_deliverer_entries_are_redelivered_once(
    store_url: str, tmp_path: Path, mode: str
) -> None:
    open_store(store_url).close()
    receiver = tmp_path / "receiver.db"
    with sqlite3.connect(receiver) as db:
        db.execute("create table received (id text primary key, deliveries integer not null)")
    proc = spawn("outbox", store_url, str(receiver), mode)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    committed = [line.split()[1:] for line in out.splitlines() if line.startswith("committed")]
    assert len(committed) == 3  # turn 3 committed, then the process died

    with open_store(store_url) as store:  # a new deliverer finds what was left
        left = store.pending_outbox()
        assert [e.id for e in left] == committed[2]
        for entry in left:
            with sqlite3.connect(receiver) as db:
                db.execute(
                    "insert into received (id, deliveries) values (?, 1)"
                    " on conflict (id) do update set deliveries = deliveries + 1",
                    (entry.id,),
                )
            store.mark_sent(entry.id)
        assert store.pending_outbox() == []
    with sqlite3.connect(receiver) as db:
        received = dict(db.execute("select id, deliveries from received").fetchall())
    all_ids = [entry_id for ids in committed for entry_id in ids]
    assert sorted(received) == sorted(all_ids)  # none lost, each seen once by the receiver
    redelivered = {entry_id for entry_id, count in received.items() if count > 1}
    assert redelivered == ({committed[2][0]} if mode == "kill_after_send" else set())
