"""The inbox on SQLite and Postgres: dedupe, claims, leases, fences, onBusy decisions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clrk.errors import Conflict, UnknownAgent
from clrk.manifest import TaskAgent
from clrk.runtime.inbox import Inbox
from clrk.state.queries import load_queries

Make = Callable[..., TaskAgent]


def put(inbox: Inbox, agent: TaskAgent, event_id: str, key: str = "t1") -> str:
    result = inbox.enqueue(
        agent, event_id=event_id, partition_key=key, envelope=f'{{"id": "{event_id}"}}'
    )
    return result.invocation_id


def test_both_dialects_define_the_same_queries() -> None:
    assert set(load_queries("clrk.runtime", "sqlite")) == set(
        load_queries("clrk.runtime", "postgres")
    )


def test_apply_replaces_and_delete_unregisters(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        inbox.apply(make_agent("a1", "", maxConcurrent=1))
        inbox.apply(make_agent("a1", "", maxConcurrent=3))
        assert inbox.agent("a1").spec.max_concurrent == 3
        assert [agent.name for agent, _ in inbox.agents()] == ["a1"]
        put(inbox, inbox.agent("a1"), "e1")
        assert inbox.delete("a1") == 1  # its waiting event is dead-lettered
        assert inbox.invocations()[0]["status"] == "dead"
        with pytest.raises(UnknownAgent):
            inbox.agent("a1")
        with pytest.raises(UnknownAgent):
            inbox.delete("a1")


def test_dedupe_on_agent_and_event_id(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        a, b = make_agent("a", ""), make_agent("b", "")
        inbox.apply(a)
        inbox.apply(b)
        first = inbox.enqueue(a, event_id="e1", partition_key="t", envelope="{}")
        again = inbox.enqueue(a, event_id="e1", partition_key="t", envelope="{}")
        other = inbox.enqueue(b, event_id="e1", partition_key="t", envelope="{}")
        assert not first.duplicate and again.duplicate
        assert again.invocation_id == first.invocation_id
        assert not other.duplicate and other.invocation_id != first.invocation_id
        assert len(inbox.invocations()) == 2


def test_one_claim_per_partition_and_max_concurrent(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "", maxConcurrent=2)
        inbox.apply(agent)
        for n, key in enumerate(["t1", "t1", "t2", "t3"]):
            put(inbox, agent, f"e{n}", key)
        first = inbox.claim("w", 30)
        second = inbox.claim("w", 30)
        assert first is not None and second is not None
        assert (first.partition_key, second.partition_key) == ("t1", "t2")  # t1's 2nd waits
        assert inbox.claim("w", 30) is None  # maxConcurrent reached
        inbox.finish(first, "succeeded", exit_code=0, result="{}")
        third = inbox.claim("w", 30)
        assert third is not None and third.partition_key == "t1"  # arrival order in t1
        assert third.fence == first.fence + 1


def test_stale_fence_cannot_finish(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "")
        inbox.apply(agent)
        put(inbox, agent, "e1")
        old = inbox.claim("dead-worker", 0.2)
        assert old is not None
        time.sleep(0.4)  # the lease runs out without renewal
        assert not inbox.renew(old, "dead-worker", 30)
        new = inbox.claim("live-worker", 30)
        assert new is not None and new.id == old.id and new.fence > old.fence
        assert new.attempt == 2
        with pytest.raises(Conflict) as info:
            inbox.finish(old, "succeeded", result='{"late": true}')
        assert info.value.kind == "fence" and info.value.found == new.fence
        inbox.finish(new, "succeeded", result="{}")
        row = inbox.invocation(new.id)
        assert row is not None and row["result"] == "{}"


def test_expired_lease_dead_letters_when_retries_are_spent(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "", retries={"max": 0})
        inbox.apply(agent)
        put(inbox, agent, "e1")
        assert inbox.claim("w", 0.1) is not None
        time.sleep(0.3)
        assert inbox.claim("w", 30) is None
        row = inbox.invocations()[0]
        assert row["status"] == "dead" and "lease expired" in row["reason"]


def test_retry_waits_for_its_backoff(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "")
        inbox.apply(agent)
        put(inbox, agent, "e1")
        claim = inbox.claim("w", 30)
        assert claim is not None
        inbox.retry(claim, 60, exit_code=1, stderr_tail="boom", reason="exit code 1")
        assert inbox.claim("w", 30) is None
        row = inbox.invocations()[0]
        assert (row["status"], row["reason"], row["attempts"]) == ("queued", "exit code 1", 1)


def test_coalesce_folds_waiting_events_into_one_run(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "", onBusy="coalesce")
        inbox.apply(agent)
        ids = [put(inbox, agent, f"e{n}") for n in range(3)]
        put(inbox, agent, "other", "t2")
        claim = inbox.claim("w", 30)
        assert claim is not None and claim.member_ids == ids
        assert [env for env in claim.envelopes] == [f'{{"id": "e{n}"}}' for n in range(3)]
        statuses = {row["id"]: row["status"] for row in inbox.invocations()}
        assert [statuses[i] for i in ids] == ["running", "coalesced", "coalesced"]


def test_reject_refuses_an_event_while_its_partition_is_busy(db_url: str, make_agent: Make) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "", onBusy="reject")
        inbox.apply(agent)
        assert (
            inbox.enqueue(agent, event_id="e1", partition_key="t", envelope="{}").status == "queued"
        )
        second = inbox.enqueue(agent, event_id="e2", partition_key="t", envelope="{}")
        assert second.status == "rejected"
        assert (
            inbox.enqueue(agent, event_id="e3", partition_key="u", envelope="{}").status == "queued"
        )
        row = inbox.invocation(second.invocation_id)
        assert row is not None and "partition busy" in row["reason"]


def test_interrupt_flags_the_running_turn_and_its_retry_takes_everything_waiting(
    db_url: str, make_agent: Make
) -> None:
    with Inbox.open(db_url) as inbox:
        agent = make_agent("a", "", onBusy="interrupt")
        inbox.apply(agent)
        running = put(inbox, agent, "e1")
        claim = inbox.claim("w", 30)
        assert claim is not None and claim.id == running and claim.batched
        waiting = put(inbox, agent, "e2")
        assert inbox.poll("w")[1] == 1
        assert inbox.cancel_requests("w") == [running]
        newest = put(inbox, agent, "e3")
        assert inbox.claim("w", 30) is None, "the partition is still held"
        # The dispatcher kills the run and queues its event again.
        inbox.retry(claim, 0.0, reason="interrupted")
        again = inbox.claim("w", 30)
        assert again is not None and again.id == running and again.attempt == 2
        assert again.member_ids == [running, waiting, newest]
        assert again.fence > claim.fence
        row = inbox.invocation(waiting)
        assert row is not None and row["status"] == "coalesced"


def test_runtime_tables_survive_reopen(tmp_path: Path, make_agent: Make) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Inbox.open(url) as inbox:
        inbox.apply(make_agent("a", ""))
    with Inbox.open(url) as inbox:
        assert inbox.agent("a").name == "a"
