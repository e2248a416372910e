"""A separate process for tests/state/test_processes.py: `python _child.py MODE URL ...`.

Real processes, not threads: the point is that nothing but the database is shared.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time

from clrk.errors import Conflict
from clrk.state import OutboxEntry, open_store


def count(url: str, key: str, turns: int, worker: str) -> None:
    """Increment a counter `turns` times, retrying on Conflict as a real caller would."""
    conflicts = 0
    with open_store(url) as store:
        done = 0
        while done < turns:
            try:
                with store.turn(key, consumes=[f"{worker}-{done}"]) as turn:
                    state = turn.state or {"n": 0, "by": {}}
                    state["n"] += 1
                    state["by"][worker] = state["by"].get(worker, 0) + 1
                    turn.state = state
                done += 1
            except Conflict:
                conflicts += 1
                time.sleep(random.uniform(0, 0.004))
    print(f"conflicts {conflicts}", flush=True)


def stall(url: str, key: str) -> None:
    """Take the lease, say so, then commit only when told (after a SIGSTOP/SIGCONT)."""
    with open_store(url) as store:
        try:
            with store.turn(key, lease_seconds=0.5) as turn:
                turn.state = {"by": "stalled"}
                turn.add_outbox({"text": "from the stalled holder"})
                print(f"ready {turn.fence}", flush=True)
                sys.stdin.readline()
            print("committed", flush=True)
        except Conflict as exc:
            print(f"conflict {exc.kind}", flush=True)


def deliver(receiver: str, entry: OutboxEntry) -> None:
    """An idempotent receiver: one row per outbox id, counting attempts."""
    with sqlite3.connect(receiver, timeout=30) as db:
        db.execute(
            "insert into received (id, deliveries) values (?, 1)"
            " on conflict (id) do update set deliveries = deliveries + 1",
            (entry.id,),
        )


def outbox(url: str, receiver: str, mode: str) -> None:
    """Four turns with two replies each; die by SIGKILL during turn 3's delivery."""
    with open_store(url) as store:
        for n in range(1, 5):
            with store.turn("thread", consumes=[f"event-{n}"]) as turn:
                ids = [turn.add_outbox({"reply": n, "part": part}) for part in (1, 2)]
                turn.state = {"turns": n}
            print("committed " + " ".join(ids), flush=True)
            if n == 3 and mode == "kill_after_commit":
                os.kill(os.getpid(), signal.SIGKILL)
            for entry in store.pending_outbox():
                deliver(receiver, entry)
                if n == 3 and mode == "kill_after_send":
                    os.kill(os.getpid(), signal.SIGKILL)
                store.mark_sent(entry.id)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "count":
        count(args[0], args[1], int(args[2]), args[3])
    elif mode == "stall":
        stall(args[0], args[1])
    elif mode == "outbox":
        outbox(*args)
    else:
        raise SystemExit(f"unknown mode {mode}")
