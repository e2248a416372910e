"""Many processes, one thread, the same moment: is any message lost?

8 processes x 20 rounds; in each round every process sends one message to the same
thread at once (a barrier). Two ways:

* ``langgraph``: LangGraph's PostgresSaver alone: each process loads the latest
  checkpoint, runs the graph, saves; concurrent turns fork from the same parent and all
  but one fork are lost from the thread's latest state.
* ``clrk``: the same graph on ClrkSaver inside a clrk turn (``Store.turn``: the key's
  lease; a turn that finds it held retries shortly), with the turn's fence on the saver.

Then the clrk work is run again by one process, one turn after another ("serial"), to
compare wall times. Kept = user messages present in the thread's final state.

Run: python bench/langgraph_race.py [--procs 8 --rounds 20]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import THREAD_ID, build_graph, fresh_postgres, print_table, user_message
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.postgres import PostgresSaver

from clrk.errors import Conflict
from clrk.state import open_store
from clrk.state.langgraph import ClrkSaver

CONFIG = {"configurable": {"thread_id": THREAD_ID}}
ANCHOR = "anchor (measured before): LangGraph's saver alone keeps about 24 of 160"
RETRY_SECONDS = (0.002, 0.010)  # wait between attempts when another turn holds the lease


def langgraph_turn(url: str, sender: str, turn: int) -> None:
    with PostgresSaver.from_conn_string(url) as saver:
        build_graph().compile(checkpointer=saver).invoke(
            {"messages": [user_message(turn, sender)]}, CONFIG
        )


def clrk_turn(url: str, store: Any, sender: str, turn: int) -> int:
    """One turn under the key's lease; returns how many attempts it took."""
    attempts = 0
    while True:
        attempts += 1
        try:
            with store.turn(THREAD_ID, consumes=[f"{sender}:{turn}"]) as lease:
                with ClrkSaver.from_url(url, fence=lease.fence, fence_key=THREAD_ID) as saver:
                    build_graph().compile(checkpointer=saver).invoke(
                        {"messages": [user_message(turn, sender)]}, CONFIG, durability="exit"
                    )
                lease.state = {"last": f"{sender}:{turn}"}
            return attempts
        except Conflict as exc:
            if exc.kind != "lease":
                raise
            time.sleep(random.uniform(*RETRY_SECONDS))


def worker(mode: str, url: str, index: int, rounds: int, barrier: Any, out: Any) -> None:
    sender = f"W{index}"
    attempts = 0
    store = open_store(url) if mode == "clrk" else None
    try:
        for turn in range(rounds):
            barrier.wait()
            if store is None:
                langgraph_turn(url, sender, turn)
            else:
                attempts += clrk_turn(url, store, sender, turn)
    finally:
        if store is not None:
            store.close()
    out.put(attempts)


def run_concurrent(mode: str, url: str, procs: int, rounds: int) -> tuple[float, int]:
    barrier = mp.Barrier(procs)
    out: Any = mp.Queue()
    workers = [
        mp.Process(target=worker, args=(mode, url, i, rounds, barrier, out)) for i in range(procs)
    ]
    start = time.perf_counter()
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    elapsed = time.perf_counter() - start
    if any(p.exitcode for p in workers):
        raise SystemExit(f"{mode}: a worker failed")
    return elapsed, sum(out.get() for _ in workers)


def run_serial(url: str, procs: int, rounds: int) -> float:
    start = time.perf_counter()
    with open_store(url) as store:
        for turn in range(rounds):
            for index in range(procs):
                clrk_turn(url, store, f"W{index}", turn)
    return time.perf_counter() - start


def kept(url: str, mode: str) -> int:
    opener = PostgresSaver.from_conn_string if mode == "langgraph" else ClrkSaver.from_url
    with opener(url) as saver:
        tup = saver.get_tuple(CONFIG)
    if tup is None:
        return 0
    messages = tup.checkpoint["channel_values"].get("messages", [])
    return sum(isinstance(m, HumanMessage) for m in messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    sent = args.procs * args.rounds
    rows = []
    with fresh_postgres("race_lg") as url:
        with PostgresSaver.from_conn_string(url) as saver:
            saver.setup()
        wall, _ = run_concurrent("langgraph", url, args.procs, args.rounds)
        rows.append(["langgraph PostgresSaver alone", sent, kept(url, "langgraph"), wall, "-", "-"])
    with fresh_postgres("race_clrk") as url:
        ClrkSaver.from_url(url).setup()
        wall, attempts = run_concurrent("clrk", url, args.procs, args.rounds)
        got = kept(url, "clrk")
    with fresh_postgres("race_serial") as url:
        ClrkSaver.from_url(url).setup()
        serial = run_serial(url, args.procs, args.rounds)
        serial_kept = kept(url, "clrk")
    rows.append(["clrk (saver + turn lease)", sent, got, wall, serial, wall / serial])
    rows.append(["clrk, one process, serial", sent, serial_kept, serial, serial, 1.0])
    print(f"\nlanggraph_race: {args.procs} processes x {args.rounds} rounds, one thread, Postgres")
    print(ANCHOR)
    print(f"clrk lease attempts: {attempts} for {sent} turns (retry every 2-10 ms)\n")
    print_table(["path", "sent", "kept", "wall s", "serial s", "wall/serial"], rows)
    print("\ngoal: 160 of 160 kept, within 1.2x of serial time")


if __name__ == "__main__":
    main()
