"""Per-turn cost as a thread grows: LangGraph's savers against ClrkSaver.

300 turns on one thread, each with a freshly compiled graph and a new connection, as a
fresh process per event would do; LangGraph's default durability ("async": a checkpoint
per step) and "exit" (one checkpoint per invocation, what clrk's agent uses). The series
run in lockstep (turn N of each before turn N + 1 of any). A third backend, "memory"
(LangGraph's InMemorySaver, kept in this process, no database), is the part of the growth
that LangGraph itself adds: it too loads and decodes the whole thread at every turn.
of the direct (unrelayed) turns within 5 of N; round trips and bytes sent are measured on
turns 1, 10, 100 and 300 through the counting relay (bench/_common).

Run: python bench/langgraph_growth.py [--turns 300]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ADMIN_URL,
    THREAD_ID,
    Relay,
    SqliteCounter,
    build_graph,
    fresh_postgres,
    median_ms,
    postgres_stored_bytes,
    print_table,
    sqlite_stored_bytes,
    user_message,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from clrk.state.langgraph import ClrkSaver

MARKS = (1, 10, 100, 300)
ANCHOR = (
    "anchor (LangGraph PostgresSaver, measured before): 10 -> 40 ms, 454 KB/turn, 68.7 MB, 6-7 rt"
)


@dataclass
class Series:
    saver: str  # "langgraph" or "clrk"
    backend: str  # "postgres", "sqlite" or "memory" (LangGraph's in-process saver)
    durability: str
    latency: dict[int, float] = field(default_factory=dict)
    sent: dict[int, tuple[int, int]] = field(default_factory=dict)  # turn -> (trips, bytes)
    stored: int = 0
    messages: int = 0

    @property
    def name(self) -> str:
        return f"{self.saver}/{self.backend}/{self.durability}"


def opener(series: Series, url: str, memory: InMemorySaver) -> Callable[[], Any]:
    if series.backend == "memory":
        return lambda: contextlib.nullcontext(memory)
    if series.saver == "clrk":
        return lambda: ClrkSaver.from_url(url, fence=None, fence_key=None)
    if series.backend == "postgres":
        return lambda: PostgresSaver.from_conn_string(url)
    return lambda: SqliteSaver.from_conn_string(url.removeprefix("sqlite:///"))


@contextlib.contextmanager
def database(series: Series, relay: Relay) -> Iterator[tuple[str, str, Callable[[], int]]]:
    """(direct url, counted url, stored-bytes probe) for a fresh database."""
    if series.backend == "memory":
        yield "", "", lambda: 0
    elif series.backend == "postgres":
        with fresh_postgres(series.saver) as url:
            yield url, relay.url(url), lambda: postgres_stored_bytes(url)
    else:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            yield url, url, lambda: sqlite_stored_bytes(url.removeprefix("sqlite:///"))


class Runner:
    """One series' database and turns; series advance in lockstep (see main)."""

    def __init__(self, series: Series, relay: Relay, counter: SqliteCounter, turns: int) -> None:
        self.series, self.relay, self.counter = series, relay, counter
        self.marks = [m for m in MARKS if m <= turns] or [turns]
        self.graph = build_graph()
        self.samples: dict[int, float] = {}
        self.out: dict[str, Any] = {}
        self._db = database(series, relay)
        self.direct, self.counted, self.stored = self._db.__enter__()
        self.memory = InMemorySaver()
        if series.backend != "memory":
            with opener(series, self.direct, self.memory)() as saver:
                saver.setup()

    def counts(self) -> tuple[int, ...]:
        if self.series.backend == "postgres":
            time.sleep(0.05)  # let closed connections' Terminate reach the relay
            return self.relay.snapshot()
        return self.counter.snapshot()

    def turn(self, turn: int) -> None:
        series = self.series
        measured = turn in self.marks and series.backend != "memory"
        before = self.counts() if measured else ()
        start = time.perf_counter()
        with opener(series, self.counted if measured else self.direct, self.memory)() as saver:
            app = self.graph.compile(checkpointer=saver)
            self.out = app.invoke(
                {"messages": [user_message(turn)]},
                {"configurable": {"thread_id": THREAD_ID}},
                durability=series.durability,
            )
        elapsed = time.perf_counter() - start
        if not measured:
            self.samples[turn] = elapsed
            return
        after = self.counts()
        if series.backend == "postgres":
            # minus each new connection's start-up and Terminate
            trips = (after[0] - before[0]) - 2 * (after[2] - before[2])
            series.sent[turn] = (trips, after[1] - before[1])
        else:
            series.sent[turn] = (after[0] - before[0], after[1] - before[1])

    def finish(self) -> None:
        for mark in self.marks:
            window = [s for t, s in self.samples.items() if abs(t - mark) <= 5]
            self.series.latency[mark] = median_ms(window)
        self.series.stored = self.stored()
        self.series.messages = len(self.out.get("messages", []))
        self._db.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    relay = Relay(ADMIN_URL)
    counter = SqliteCounter()
    counter.install()
    all_series = [
        Series(saver, backend, durability)
        for durability in ("async", "exit")
        for backend in ("postgres", "sqlite")
        for saver in ("langgraph", "clrk")
    ] + [Series("langgraph", "memory", durability) for durability in ("async", "exit")]
    runners: list[Runner] = []
    try:
        # Round-robin: turn N of every series before turn N + 1 of any, so that load from
        # other work on the machine falls on all series alike.
        runners = [Runner(series, relay, counter, args.turns) for series in all_series]
        for turn in range(1, args.turns + 1):
            for runner in runners:
                runner.turn(turn)
            if turn % 50 == 0:
                print(f"  turn {turn}", file=sys.stderr)
    finally:
        for runner in runners:
            runner.finish()
        counter.uninstall()
        relay.close()
    marks = sorted(all_series[0].latency)
    first, last = marks[min(1, len(marks) - 1)], marks[-1]
    print(f"\nlanggraph_growth: {args.turns} turns, one thread, fresh graph + connection per turn")
    print(ANCHOR)
    print("rt = round trips to Postgres per turn; for SQLite (in-process): statements per turn\n")
    headers = ["series", *[f"ms@{m}" for m in marks], f"@{last}/@{first}", f"sent KB@{last}"]
    headers += [f"rt@{last}", "stored MB", "messages"]
    rows = []
    for s in all_series:
        trips, sent = s.sent.get(last, (0, 0))
        in_memory = s.backend == "memory"
        rows.append(
            [
                s.name,
                *[s.latency[m] for m in marks],
                s.latency[last] / s.latency[first],
                "-" if in_memory else sent / 1024,
                "-" if in_memory else trips,
                "-" if in_memory else s.stored / 1e6,
                s.messages,
            ]
        )
    print_table(headers, rows)
    print("\nours / theirs (same backend, same durability)\n")
    ratio_rows = []
    for durability in ("async", "exit"):
        for backend in ("postgres", "sqlite"):
            theirs, ours = (
                next(s for s in all_series if (s.saver, s.backend, s.durability) == key)
                for key in (("langgraph", backend, durability), ("clrk", backend, durability))
            )
            sent_t, sent_o = theirs.sent.get(last, (0, 1)), ours.sent.get(last, (0, 0))
            ratio_rows.append(
                [
                    f"{backend}/{durability}",
                    ours.latency[last] / theirs.latency[last],
                    sent_o[1] / max(sent_t[1], 1),
                    f"{sent_o[0]} vs {sent_t[0]}",
                    ours.stored / max(theirs.stored, 1),
                    f"1/{theirs.stored / max(ours.stored, 1):.0f}",
                ]
            )
    print_table(
        [
            "backend/durability",
            f"ms@{last}",
            f"sent@{last}",
            "rt ours vs theirs",
            "stored",
            "stored",
        ],
        ratio_rows,
    )
    print(f"\ngrowth from turn {first} to {last}, ms added: ours beside LangGraph's own\n")
    growth_rows = []
    for durability in ("async", "exit"):
        alone = next(s for s in all_series if (s.backend, s.durability) == ("memory", durability))
        alone_added = alone.latency[last] - alone.latency[first]
        for backend in ("postgres", "sqlite"):
            ours = next(
                s
                for s in all_series
                if (s.saver, s.backend, s.durability) == ("clrk", backend, durability)
            )
            ours_added = ours.latency[last] - ours.latency[first]
            growth_rows.append(
                [
                    f"{backend}/{durability}",
                    ours_added,
                    alone_added,
                    ours_added - alone_added,
                    (ours.latency[first] + alone_added) / ours.latency[first],
                ]
            )
    print_table(
        [
            "backend/durability",
            "ours",
            "LangGraph alone (memory)",
            "ours beyond it",
            f"best @{last}/@{first} ours could be",
        ],
        growth_rows,
    )
    print("\ngoals: @300/@10 <= 1.3 ; stored <= 1/50 of theirs ; <= 2 round trips per turn")


if __name__ == "__main__":
    main()
