"""Conformance suite: every backend must pass these (the `store` fixture is parametrized).

A future backend joins by adding its URL to `store_url` in conftest.py.
"""

from __future__ import annotations

import time

import pytest

from clrk.errors import AlreadyConsumed, Conflict, SerializationError
from clrk.state import Store, open_store


def commit(store: Store, key: str, state: object, **kwargs: object) -> int:
    with store.turn(key, **kwargs) as turn:
        turn.state = state
    return turn.version


# -- turns ---------------------------------------------------------------------------------


def test_new_key_starts_empty_and_commits_version_one(store: Store) -> None:
    with store.turn("t1") as turn:
        assert (turn.state, turn.version, turn.fence) == (None, 0, 1)
        turn.state = {"messages": ["hi"]}
    assert turn.version == 1
    snap = store.get("t1")
    assert snap is not None and (snap.version, snap.state) == (1, {"messages": ["hi"]})


@pytest.mark.parametrize(
    "state",
    [
        {"text": "héllo ✓", "n": 3, "f": 0.1, "ok": True, "none": None, "nested": [[], {}]},
        ["a", 1],
        "just a string",
        b"\x00\x01opaque\xff",
        None,
    ],
)
def test_values_round_trip(store: Store, state: object) -> None:
    commit(store, "v", state)
    with store.turn("v") as turn:
        assert turn.state == state
        assert type(turn.state) is type(state)


def test_each_turn_sees_the_previous_one(store: Store) -> None:
    for _ in range(5):
        with store.turn("c") as turn:
            turn.state = {"n": (turn.state or {"n": 0})["n"] + 1}
    snap = store.get("c")
    assert snap is not None and (snap.state, snap.version) == ({"n": 5}, 5)


def test_exception_in_turn_changes_nothing_and_frees_the_lease(store: Store) -> None:
    commit(store, "k", {"n": 1})
    with pytest.raises(RuntimeError), store.turn("k", consumes=["e1"]) as turn:
        turn.state = {"n": 2}
        turn.add_outbox({"text": "never"})
        raise RuntimeError("agent failed")
    snap = store.get("k")
    assert snap is not None and (snap.state, snap.version) == ({"n": 1}, 1)
    assert store.pending_outbox() == []
    with store.turn("k", consumes=["e1"]) as turn:  # no wait, e1 not consumed
        assert turn.state == {"n": 1}


# -- leases and fences ---------------------------------------------------------------------


def test_held_lease_refuses_a_second_turn_before_any_work(store: Store) -> None:
    with store.turn("k") as first:
        with pytest.raises(Conflict) as info, store.turn("k"):
            pytest.fail("the second turn must not start")
        assert (info.value.key, info.value.kind) == ("k", "lease")
        first.state = {"by": "first"}
    assert store.get("k").state == {"by": "first"}


def test_stalled_holder_loses_its_lease_and_cannot_commit(store: Store) -> None:
    commit(store, "k", {"by": "nobody"})
    with pytest.raises(Conflict) as info, store.turn("k", lease_seconds=0.2) as turn:
        turn.state = {"by": "staller"}
        time.sleep(0.4)  # stall past the lease
    assert info.value.kind == "lease"
    assert store.get("k").state == {"by": "nobody"}


def test_next_holder_proceeds_and_the_old_one_is_fenced_out(store: Store) -> None:
    with pytest.raises(Conflict) as info, store.turn("k", lease_seconds=0.2) as old:
        old.state = {"by": "old"}
        time.sleep(0.4)
        with store.turn("k") as new:  # does not wait for the old holder
            assert new.fence == old.fence + 1
            new.state = {"by": "new"}
    assert info.value.kind == "fence"
    snap = store.get("k")
    assert snap is not None and (snap.state, snap.version) == ({"by": "new"}, 1)


def test_external_fence_is_used_and_lower_ones_are_refused(store: Store) -> None:
    with store.turn("k", fence=5) as turn:
        assert turn.fence == 5
        turn.state = 1
    with pytest.raises(Conflict) as info, store.turn("k", fence=4):
        pytest.fail("a lower fence must not start")
    assert (info.value.kind, info.value.expected, info.value.found) == ("fence", 4, 5)
    commit(store, "k", 2, fence=5)  # the same holder may run another turn
    with store.turn("k") as turn:  # an own lease continues the same sequence
        assert turn.fence == 6


def test_newer_external_fence_takes_over_and_fences_out_the_old_holder(store: Store) -> None:
    with pytest.raises(Conflict) as info, store.turn("k", fence=1) as stale:
        stale.state = "stale"
        commit(store, "k", "fresh", fence=2)  # the dispatcher gave the key to someone else
    assert info.value.kind == "fence"
    assert store.get("k").state == "fresh"


def test_version_check_catches_a_concurrent_commit(store: Store) -> None:
    commit(store, "k", 0, fence=3)
    with pytest.raises(Conflict) as info, store.turn("k", fence=3) as first:
        with store.turn("k", fence=3) as second:
            second.state = "second"
        first.state = "first"
    assert info.value.kind in {"version", "lease"}
    snap = store.get("k")
    assert snap is not None and (snap.state, snap.version) == ("second", 2)


def test_deleted_key_makes_the_commit_conflict(store: Store) -> None:
    with pytest.raises(Conflict), store.turn("k") as turn:
        turn.state = 1
        store.delete("k")
    assert store.get("k") is None


# -- consumed events -----------------------------------------------------------------------


def test_consumed_event_is_refused_before_any_work(store: Store) -> None:
    commit(store, "k", 1, consumes=["e1", "e2"])
    fence_before = store.get("k").fence
    with pytest.raises(AlreadyConsumed) as info, store.turn("k", consumes=["e3", "e2"]):
        pytest.fail("must not start")
    assert (info.value.key, info.value.event_ids) == ("k", ["e2"])
    assert store.get("k").fence == fence_before  # refused without taking the lease
    commit(store, "k", 2, consumes=["e3"])
    commit(store, "other", 1, consumes=["e1"])  # ids are per key


def test_consumed_ids_are_recorded_only_by_a_commit(store: Store) -> None:
    with pytest.raises(Conflict), store.turn("k", consumes=["e1"]) as turn:
        store.delete("k")  # makes this commit fail
        turn.state = 1
    commit(store, "k", 1, consumes=["e1", "e1"])  # duplicates in one turn are fine


# -- outbox --------------------------------------------------------------------------------


def test_outbox_entries_are_deliverable_only_after_commit(store: Store) -> None:
    with store.turn("k") as turn:
        first = turn.add_outbox({"text": "one"})
        second = turn.add_outbox({"text": "two"})
        assert store.pending_outbox() == []
        turn.state = {"replied": True}
    entries = store.pending_outbox()
    assert [(e.id, e.payload, e.seq, e.version) for e in entries] == [
        (first, {"text": "one"}, 0, 1),
        (second, {"text": "two"}, 1, 1),
    ]
    assert turn.outbox_ids == [first, second]
    assert store.mark_sent(first) is True
    assert store.mark_sent(first) is False
    assert [e.id for e in store.pending_outbox()] == [second]


def test_an_entry_given_up_is_never_pending_again(store: Store) -> None:
    with store.turn("k") as turn:
        refused = turn.add_outbox({"text": "to a channel that is gone"})
        kept = turn.add_outbox({"text": "fine"})
    assert store.mark_failed(refused, "channel_not_found") is True
    assert [e.id for e in store.pending_outbox(claim_seconds=0.01)] == [kept]
    time.sleep(0.05)  # past the claim: a given-up entry still does not come back
    assert [e.id for e in store.pending_outbox(key="k")] == [kept]
    assert store.mark_failed(refused, "again") is False
    assert store.mark_sent(refused) is False
    row = store.connector.fetch_one(
        "select failure from clrk_outbox where id = :id", {"id": refused}
    )
    assert row == {"failure": "channel_not_found"}


def test_outbox_of_a_conflicting_turn_is_discarded(store: Store) -> None:
    with pytest.raises(Conflict), store.turn("k", fence=1) as stale:
        stale.add_outbox({"text": "stale reply"})
        commit(store, "k", "fresh", fence=2)
    assert store.pending_outbox() == []


def test_outbox_claims_hide_entries_until_they_expire(store: Store) -> None:
    with store.turn("k") as turn:
        entry_id = turn.add_outbox({"n": 1})
    claimed = store.pending_outbox(claim_seconds=0.2)
    assert [(e.id, e.attempts) for e in claimed] == [(entry_id, 1)]
    assert store.pending_outbox(claim_seconds=0.2) == []  # another deliverer gets nothing
    time.sleep(0.3)  # the first deliverer died without marking it sent
    again = store.pending_outbox(claim_seconds=0.2)
    assert [(e.id, e.attempts) for e in again] == [(entry_id, 2)]
    store.mark_sent(entry_id)
    time.sleep(0.3)
    assert store.pending_outbox(claim_seconds=0.2) == []


def test_unsent_entries_of_one_key_include_claimed_ones(store: Store) -> None:
    with store.turn("a") as turn:
        a_id = turn.add_outbox({"n": 1})
    with store.turn("b") as turn:
        turn.add_outbox({"n": 2})
    assert [e.id for e in store.pending_outbox(claim_seconds=30)] != []  # claimed by "a deliverer"
    assert [e.id for e in store.pending_outbox(key="a")] == [a_id], "claimed, still unsent"
    store.mark_sent(a_id)
    assert store.pending_outbox(key="a") == []


def test_a_deliverer_claims_one_keys_entries_and_can_hand_them_back(store: Store) -> None:
    ids = {}
    for key in ("a", "b"):
        with store.turn(key) as turn:
            ids[key] = turn.add_outbox({"for": key})
    assert [e.id for e in store.pending_outbox(key="a", claim_seconds=30)] == [ids["a"]]
    assert store.pending_outbox(key="a", claim_seconds=30) == [], "held by the first"
    assert [e.id for e in store.pending_outbox(claim_seconds=30)] == [ids["b"]]
    assert store.release_claim(ids["a"]) is True  # the first gave up for now
    assert [e.id for e in store.pending_outbox(key="a", claim_seconds=30)] == [ids["a"]]
    store.mark_sent(ids["a"])
    assert store.release_claim(ids["a"]) is False


# -- values --------------------------------------------------------------------------------


def test_unserializable_state_names_its_path_and_changes_nothing(store: Store) -> None:
    commit(store, "k", {"messages": []})
    bad = {"messages": [{"content": "ok"}] * 3 + [{"role": "user", "content": object()}]}
    with pytest.raises(SerializationError) as info, store.turn("k") as turn:
        turn.state = bad
    assert info.value.path == "$.messages[3].content"
    assert store.get("k").state == {"messages": []}
    with store.turn("k"):  # the lease was released
        pass


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {"b c": float("nan")}}, '$.a["b c"]'),
        ({"blob": b"x"}, "$.blob"),
        ([1, 2, {3, 4}], "$[2]"),
        ({(1, 2): "tuple key"}, "$[(1, 2)]"),
        # Bug: a lone surrogate raised a bare UnicodeEncodeError, with no path.
        ({"messages": ["ok", {"text": "bad \ud800"}]}, "$.messages[1].text"),
        ({"k\udc80": 1}, "$['k\\udc80']"),
    ],
)
def test_serialization_error_paths(store: Store, value: object, path: str) -> None:
    with pytest.raises(SerializationError) as info, store.turn("k") as turn:
        turn.state = value
    assert info.value.path == path


@pytest.mark.parametrize("key", ["nul\x00key", "half \ud800"])
def test_keys_every_backend_cannot_hold_are_refused_alike(store: Store, key: str) -> None:
    """Bug: a NUL in a key worked on SQLite and was a StoreError on Postgres."""
    with pytest.raises(ValueError, match="holds text"), store.turn(key):
        pass
    with pytest.raises(ValueError, match="UTF-8 strings"), store.turn("k", consumes=["e\x00"]):
        pass
    assert store.keys() == []


def test_circular_state_is_refused(store: Store) -> None:
    loop: dict[str, object] = {}
    loop["self"] = [loop]
    with pytest.raises(SerializationError) as info, store.turn("k") as turn:
        turn.state = loop
    assert info.value.path == "$.self[0]"


def test_unserializable_outbox_payload_fails_where_it_is_added(store: Store) -> None:
    with store.turn("k") as turn:
        with pytest.raises(SerializationError) as info:
            turn.add_outbox({"text": "x", "when": time})
        assert info.value.path == "outbox[0].when"
        turn.state = 1
    assert store.pending_outbox() == []


# -- thread operations ---------------------------------------------------------------------


def test_keys_lists_committed_keys_only(store: Store) -> None:
    for key in ["slack:T1:C1:1.0", "slack:T1:C2:2.0", "ticket:7"]:
        commit(store, key, 1)
    with pytest.raises(RuntimeError), store.turn("never-committed"):
        raise RuntimeError
    assert store.keys() == ["slack:T1:C1:1.0", "slack:T1:C2:2.0", "ticket:7"]
    assert store.keys(prefix="slack:") == ["slack:T1:C1:1.0", "slack:T1:C2:2.0"]
    assert store.keys(limit=1) == ["slack:T1:C1:1.0"]
    assert store.keys(prefix="slack_") == []


def test_history_keeps_every_version_when_asked(history_store: Store) -> None:
    for n in range(3):
        commit(history_store, "k", {"n": n})
    assert [(s.version, s.state) for s in history_store.history("k")] == [
        (1, {"n": 0}),
        (2, {"n": 1}),
        (3, {"n": 2}),
    ]


def test_history_without_keeping_is_the_current_version(store: Store) -> None:
    for n in range(3):
        commit(store, "k", {"n": n})
    assert [(s.version, s.state) for s in store.history("k")] == [(3, {"n": 2})]
    assert store.history("missing") == []


def test_delete_removes_everything_under_the_key(history_store: Store) -> None:
    store = history_store
    with store.turn("gone", consumes=["e1"]) as turn:
        turn.add_outbox({"text": "bye"})
        turn.state = 1
    with store.turn("kept", consumes=["e1"]) as turn:
        kept_entry = turn.add_outbox({"text": "stay"})
        turn.state = 2
    assert store.delete("gone") is True
    assert store.delete("gone") is False
    assert store.get("gone") is None and store.history("gone") == []
    assert store.keys() == ["kept"]
    assert [e.id for e in store.pending_outbox()] == [kept_entry]
    with store.turn("gone", consumes=["e1"]) as turn:  # its consumed ids went too
        assert turn.version == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": ""},
        {"key": "k", "consumes": "e1"},
        {"key": "k", "consumes": [""]},
        {"key": "k", "fence": -1},
        {"key": "k", "lease_seconds": 0},
    ],
)
def test_bad_turn_arguments_are_refused_clearly(store: Store, kwargs: dict) -> None:
    with pytest.raises(ValueError), store.turn(**kwargs):
        pass
    assert store.keys() == []


@pytest.mark.postgres
def test_only_the_lease_skips_the_wal_flush_the_commit_waits_for_it(postgres_url: str) -> None:
    """turn_load commits asynchronously (see postgres.sql); the setting must end with its
    statement, or the turn's commit -- the state, consumed ids and outbox -- would too."""
    with open_store(postgres_url, max_size=1) as store:
        setting = "select current_setting('synchronous_commit') as value"
        with store.turn("k") as turn:
            assert store.connector.fetch_one(setting) == {"value": "on"}
            turn.state = {"n": 1}
        assert store.connector.fetch_one(setting) == {"value": "on"}
        assert store.get("k").state == {"n": 1}


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.get("nul\x00key"),
        lambda store: store.history("nul\x00key"),
        lambda store: store.delete("nul\x00key"),
        lambda store: store.keys(prefix="nul\x00"),
        lambda store: store.pending_outbox(key="nul\x00key"),
        lambda store: store.get("k" * 513),
        lambda store: store.keys(limit=-1),
        lambda store: store.pending_outbox(limit=-1),
        lambda store: store.pending_outbox(claim_seconds=float("nan")),
        lambda store: store.pending_outbox(claim_seconds=-1),
    ],
)
def test_bad_arguments_are_one_error_on_every_backend(store: Store, call) -> None:
    """Bugs (found by a helper): each of these answered on SQLite (None, [], unlimited) and
    raised a StoreError on Postgres."""
    with pytest.raises(ValueError):
        call(store)


def test_odd_values_fail_alike_on_every_backend(store: Store) -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"), store.turn("k", fence=2**63):
        pass
    with pytest.raises(ValueError, match="more than 512"), store.turn("k" * 513):
        pass
    with store.turn("k") as turn, pytest.raises(SerializationError) as info:
        turn.add_outbox({"text": "half \ud800"})
    assert info.value.path == "outbox[0].text"
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]  # type: ignore[assignment]
    with pytest.raises(SerializationError, match="nested too deeply"), store.turn("k") as turn:
        turn.state = deep
    with store.turn("k") as turn:
        entry = turn.add_outbox({"n": 1})
    assert store.mark_failed(entry, "refused: \x00 \udc80") is True
    assert store.mark_sent("nul\x00id") is False
    assert store.keys() == ["k"] and store.get("k").state is None
