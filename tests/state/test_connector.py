"""The connector contract, on every backend: parameters, rows, transactions, errors."""

from __future__ import annotations

import threading

import pytest

from clrk.errors import ConfigError, StoreError, StoreUnavailable
from clrk.state import open_connector
from clrk.state.postgres import to_pyformat


def test_unknown_scheme_lists_supported() -> None:
    with pytest.raises(ConfigError) as info:
        open_connector("mysql://x/y")
    assert "mysql" in str(info.value)
    assert "sqlite:///" in str(info.value) and "postgresql://" in str(info.value)


@pytest.mark.parametrize("max_size", [10, 1])  # a pool, or one connection
def test_unreachable_postgres_masks_password(max_size: int) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://clrk:s3cret@127.0.0.1:{port}/db"
    with pytest.raises(StoreUnavailable) as info:
        open_connector(url, timeout_seconds=2, max_size=max_size)
    assert "s3cret" not in str(info.value)
    assert f"clrk:***@127.0.0.1:{port}" in str(info.value)
    assert "\n" not in str(info.value), "one line, for logs and the CLI"
    assert info.value.__cause__ is not None


def test_unopenable_sqlite_is_unavailable(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable):
        open_connector(f"sqlite:///{blocker}/state.db")


def test_pyformat_rewrite_keeps_casts_strings_and_percent() -> None:
    sql = "select :a::bigint, ':b', \"c:d\", x % 2 -- :e\nfrom t where y = :f"
    assert to_pyformat(sql) == (
        "select %(a)s::bigint, ':b', \"c:d\", x %% 2 -- :e\nfrom t where y = %(f)s"
    )


def test_rows_params_and_rowcount(store_url: str) -> None:
    with open_connector(store_url) as db:
        db.execute("create table t (k text primary key, n integer)")
        assert db.execute("insert into t values (:k, :n)", {"k": "a", "n": 1}) == 1
        db.execute("insert into t values (:k, :n)", {"k": "b", "n": 2})
        assert db.fetch_one("select n from t where k = :k", {"k": "b"}) == {"n": 2}
        assert db.fetch_one("select n from t where k = :k", {"k": "zz"}) is None
        assert db.fetch_all("select k, n from t order by k") == [
            {"k": "a", "n": 1},
            {"k": "b", "n": 2},
        ]
        assert db.execute("update t set n = n + 1") == 2
        assert db.fetch_one("select count(*) as c from t where k like :p", {"p": "%"}) == {"c": 2}


def test_transaction_commits_rolls_back_and_nests(store_url: str) -> None:
    with open_connector(store_url) as db:
        db.execute("create table t (n integer)")
        with db.transaction():
            db.execute("insert into t values (1)")
        with pytest.raises(RuntimeError), db.transaction():
            db.execute("insert into t values (2)")
            raise RuntimeError("boom")
        with db.transaction():
            db.execute("insert into t values (3)")
            with pytest.raises(RuntimeError), db.transaction():
                db.execute("insert into t values (4)")
                raise RuntimeError("inner")
        rows = db.fetch_all("select n from t order by n")
        assert [row["n"] for row in rows] == [1, 3]


def test_transaction_is_per_thread(store_url: str) -> None:
    """A transaction on one thread is invisible to another until it commits."""
    with open_connector(store_url) as db:
        db.execute("create table t (n integer)")
        inside = threading.Event()
        release = threading.Event()
        seen: list[int] = []

        def writer() -> None:
            with db.transaction():
                db.execute("insert into t values (1)")
                inside.set()
                release.wait(10)

        thread = threading.Thread(target=writer)
        thread.start()
        assert inside.wait(10)
        seen.append(db.fetch_one("select count(*) as c from t")["c"])
        release.set()
        thread.join()
        seen.append(db.fetch_one("select count(*) as c from t")["c"])
        assert seen == [0, 1]


def test_driver_errors_are_mapped_with_cause(store_url: str) -> None:
    with open_connector(store_url) as db:
        with pytest.raises(StoreError) as info:
            db.fetch_one("select * from no_such_table")
        assert not isinstance(info.value, StoreUnavailable)
        assert info.value.__cause__ is not None
        db.execute("create table t (k text primary key)")
        db.execute("insert into t values ('a')")
        with pytest.raises(StoreError):
            db.execute("insert into t values ('a')")
        with db.transaction():  # the connector is usable after an error
            db.execute("insert into t values ('b')")


def test_executescript_runs_several_statements(store_url: str) -> None:
    with open_connector(store_url) as db, db.transaction():
        db.executescript(
            "create table a (n integer);\n-- a comment; with a semicolon\n"
            "insert into a values (1);\ninsert into a values (2);\n"
        )
        assert db.fetch_one("select sum(n) as s from a")["s"] == 3


@pytest.mark.postgres
def test_postgres_open_makes_no_probe_connection(postgres_url: str, monkeypatch) -> None:
    """A fresh process per turn pays for every connection: a healthy open makes one (the
    pool's), and asks the driver for a reason only when the pool is not up."""
    import psycopg

    probes: list[str] = []
    real_connect = psycopg.connect

    def counting_connect(*args, **kwargs):
        probes.append(str(args[0]) if args else "")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counting_connect)
    with open_connector(postgres_url) as db:
        assert db.fetch_one("select 1 as one") == {"one": 1}
    assert probes == []


@pytest.mark.postgres
def test_one_connection_connector_recovers_from_a_lost_connection(postgres_url: str) -> None:
    """``max_size=1`` (what a one-turn process uses) has no pool to replace a connection
    the server dropped: the statement that finds it gone fails, the next one reconnects."""
    import psycopg

    with open_connector(postgres_url, max_size=1) as db:
        pid = db.fetch_one("select pg_backend_pid() as pid")["pid"]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            db.fetch_one("select 1 as one")
        assert db.fetch_one("select 1 as one") == {"one": 1}
        assert db.fetch_one("select pg_backend_pid() as pid")["pid"] != pid
        with db.transaction():  # transactions pin the same single connection
            db.execute("create table t (n integer)")
            db.execute("insert into t values (1)")
        assert db.fetch_one("select count(*) as n from t") == {"n": 1}
