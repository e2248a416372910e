"""Per-turn cost of clrk.state against the bare driver, on SQLite and Postgres.

A turn here is what an agent does per event: load the thread's state, change one entry,
commit it with one consumed event id and one outbox entry. The floor is the least any
store could do for the same thread: a bare ``sqlite3``/``psycopg`` read of the same bytes
plus a write of them back (no JSON, no checks). Round trips are statements sent to the
database, counting BEGIN/COMMIT. Goals: <= 2 round trips per turn, within 1.5x the floor.

    python bench/state_turns.py [--turns 200] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from clrk.state import Connector, Store, open_connector, run_migrations
from clrk.state.connector import Params, Row

SIZES = (1, 100, 1000)


class CountingConnector(Connector):
    """Wraps a connector and counts the statements it sends."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.url = inner.url
        self.count = 0

    def execute(self, sql: str, params: Params = None) -> int:
        self.count += 1
        return self.inner.execute(sql, params)

    def executescript(self, sql: str) -> None:
        self.count += 1
        self.inner.executescript(sql)

    def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        self.count += 1
        return self.inner.fetch_one(sql, params)

    def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        self.count += 1
        return self.inner.fetch_all(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.count += 2  # BEGIN and COMMIT
        with self.inner.transaction():
            yield

    def close(self) -> None:
        self.inner.close()


def thread_state(entries: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user" if i % 2 else "assistant", "content": f"message {i} " + "x" * 40}
            for i in range(entries)
        ]
    }


def median_ms(run: Callable[[int], None], turns: int) -> float:
    for i in range(min(20, turns)):  # warm up: caches, prepared statements
        run(-1 - i)
    samples = []
    for i in range(turns):
        start = time.perf_counter()
        run(i)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def bench_store(url: str, entries: int, turns: int) -> tuple[float, float]:
    counting = CountingConnector(open_connector(url))
    run_migrations(counting.inner, "clrk.state", "state")
    store = Store(counting)
    key = f"bench-{entries}-{uuid.uuid4().hex[:6]}"
    with store.turn(key) as turn:
        turn.state = thread_state(entries)

    def one_turn(i: int) -> None:
        with store.turn(key, consumes=[f"event-{i}"]) as turn:
            state = turn.state
            state["messages"][-1]["content"] = f"edited {i}"
            turn.state = state
            turn.add_outbox({"text": f"reply {i}"})

    counting.count = 0
    ms = median_ms(one_turn, turns)
    round_trips = counting.count / (turns + min(20, turns))
    store.close()
    return ms, round_trips


def bench_json(entries: int, turns: int) -> float:
    data = json.dumps(thread_state(entries)).encode()
    return median_ms(lambda _: json.dumps(json.loads(data)).encode(), turns)


def bench_floor_sqlite(path: str, entries: int, turns: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode = wal")
    db.execute("pragma synchronous = normal")
    db.execute("create table if not exists floor (key text primary key, value blob)")
    data = json.dumps(thread_state(entries)).encode()
    db.execute("insert or replace into floor values ('k', ?)", (data,))

    def one(_: int) -> None:
        value = db.execute("select value from floor where key = 'k'").fetchone()[0]
        db.execute("update floor set value = ? where key = 'k'", (value,))

    try:
        return median_ms(one, turns)
    finally:
        db.close()


def bench_floor_postgres(url: str, entries: int, turns: int) -> float:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("create table if not exists floor (key text primary key, value bytea)")
        data = json.dumps(thread_state(entries)).encode()
        db.execute(
            "insert into floor values ('k', %s) on conflict (key) do update set value = %s",
            (data, data),
        )

        def one(_: int) -> None:
            row = db.execute("select value from floor where key = %s", ("k",)).fetchone()
            assert row is not None
            db.execute("update floor set value = %s where key = %s", (row[0], "k"))

        return median_ms(one, turns)


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str | None]:
    name = f"clrk_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as db:
            db.execute(f'create database "{name}"')
    except psycopg.Error as exc:
        print(f"postgres skipped: {exc}")
        yield None
        return
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as db:
            db.execute(f'drop database if exists "{name}" with (force)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CLRK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres"
        ),
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, scratch_postgres(args.postgres) as pg_url:
        backends = [("sqlite", f"sqlite:///{Path(tmp) / 'state.db'}")]
        if pg_url:
            backends.append(("postgres", pg_url))
        for name, url in backends:
            for entries in SIZES:
                turns = max(20, args.turns // (5 if entries >= 1000 else 1))
                store_ms, trips = bench_store(url, entries, turns)
                if name == "sqlite":
                    floor_ms = bench_floor_sqlite(str(Path(tmp) / "floor.db"), entries, turns)
                else:
                    assert pg_url is not None
                    floor_ms = bench_floor_postgres(pg_url, entries, turns)
                size = len(json.dumps(thread_state(entries)))
                json_ms = bench_json(entries, turns)
                rows.append(
                    (name, entries, size, store_ms, floor_ms, json_ms, store_ms / floor_ms, trips)
                )
    header = f"{'backend':<9}{'entries':>8}{'bytes':>9}{'turn ms':>10}{'floor ms':>10}"
    header += f"{'json ms':>9}{'ratio':>8}{'w/o json':>10}{'stmts/turn':>12}{'goal':>8}"
    print(header)
    for name, entries, size, store_ms, floor_ms, json_ms, ratio, trips in rows:
        bare = (store_ms - json_ms) / floor_ms
        trips_ok = trips <= 2 or name != "postgres"  # SQLite statements are not round trips
        verdict = "met" if ratio <= 1.5 and trips_ok else "MISSED"
        print(
            f"{name:<9}{entries:>8}{size:>9}{store_ms:>10.3f}{floor_ms:>10.3f}{json_ms:>9.3f}"
            f"{ratio:>7.2f}x{bare:>9.2f}x{trips:>12.1f}{verdict:>8}"
        )
    print("ratio = turn / floor; json ms = decoding + encoding the state alone (in turn ms);")
    print("w/o json = (turn - json) / floor: the store's own cost beside the floor's")
    print("goal: ratio <= 1.5x, round trips <= 2 (Postgres: statements = round trips;")
    print("SQLite: in-process statements, incl. BEGIN/COMMIT of the commit transaction)")


if __name__ == "__main__":
    main()
