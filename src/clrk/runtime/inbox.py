"""The durable inbox: registered agents, one row per inbound event, partition leases.

Every decision that must hold across processes is made here, inside one database
transaction, over the connector of :mod:`clrk.state` (SQLite or Postgres, same code):

* **enqueue** stores an event once per (agent, event id) and applies ``onBusy`` reject and
  interrupt against what is in flight on its partition;
* **claim** picks the oldest runnable event whose partition is free and whose agent is below
  ``maxConcurrent``, takes a lease on the partition with a new fencing token, and (with
  ``onBusy: coalesce`` or ``interrupt``) folds the partition's other waiting events into the
  same run -- for ``interrupt`` that includes the interrupted event, queued again by the
  dispatcher, so a cancelled turn's message is answered with the newer one, not dropped;
* **finish**/**retry** only succeed for the lease holder with the current fence, so a
  worker that lost its lease cannot overwrite the outcome of the next one.

Claims are serialized (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on Postgres), which
is what lets several dispatchers share one inbox. Times come from the database clock.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Self

from clrk.errors import Conflict, UnknownAgent
from clrk.manifest import TaskAgent, load_manifest
from clrk.state.connector import Connector, open_connector
from clrk.state.migrate import run_migrations
from clrk.state.queries import load_queries

TERMINAL = frozenset({"succeeded", "dead", "rejected", "cancelled"})
STATUSES = ("queued", "running", "succeeded", "dead", "rejected", "cancelled", "coalesced")
BATCHING = frozenset({"coalesce", "interrupt"})  # onBusy modes whose runs take every waiting event
_CLAIM_LOCK_KEY = 0x636C726B_0001  # pg_advisory_xact_lock key of the claim section


@dataclass(frozen=True)
class Enqueued:
    """What the ingress answers: the invocation id, and whether it was seen before."""

    invocation_id: str
    duplicate: bool
    status: str


@dataclass(frozen=True)
class Claim:
    """One run to do: a lease on ``partition_key`` with fencing token ``fence``."""

    id: str
    agent: TaskAgent
    partition_key: str
    fence: int
    attempt: int
    envelopes: list[str]  # raw structured-JSON envelopes, arrival order
    member_ids: list[str]  # invocation ids in this run (more than one when coalesced)

    @property
    def batched(self) -> bool:
        """Whether the run reads a CloudEvents batch (a JSON array), even of one event."""
        return self.agent.spec.on_busy in BATCHING


class Inbox:
    """Agents, events and leases over one connector. Thread safe, like the connector."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.queries = load_queries(__package__ or "clrk.runtime", connector.dialect)

    @classmethod
    def open(cls, url: str, **options: Any) -> Self:
        """Open the database at ``url`` and bring its runtime tables up to date."""
        connector = open_connector(url, **options)
        try:
            run_migrations(connector, __package__ or "clrk.runtime", "runtime")
        except BaseException:
            connector.close()
            raise
        return cls(connector)

    def close(self) -> None:
        self.connector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- agents -------------------------------------------------------------------------

    def apply(self, agent: TaskAgent) -> None:
        spec = agent.spec
        self.connector.execute(
            self.queries["agent_upsert"],
            {
                "name": agent.name,
                "manifest": json.dumps(agent.to_dict(), sort_keys=True),
                "max_concurrent": spec.max_concurrent,
                "on_busy": spec.on_busy,
                "max_retries": spec.retries.max_retries,
                "backoff_seconds": spec.retries.backoff_seconds,
            },
        )

    def agent(self, name: str) -> TaskAgent:
        row = self.connector.fetch_one(self.queries["agent_get"], {"name": name})
        if row is None:
            raise UnknownAgent(f"no TaskAgent named {name!r}")
        return _manifest(row["manifest"])

    def agents(self) -> list[tuple[TaskAgent, float]]:
        """Every registered agent with the time (epoch seconds) it was last applied."""
        rows = self.connector.fetch_all(self.queries["agent_list"])
        return [(_manifest(row["manifest"]), row["applied_at"]) for row in rows]

    def delete(self, name: str) -> int:
        """Unregister ``name``; its waiting events are dead-lettered. Returns how many."""
        with self.connector.transaction():
            if not self.connector.execute(self.queries["agent_delete"], {"name": name}):
                raise UnknownAgent(f"no TaskAgent named {name!r}")
            return self.connector.execute(self.queries["agent_dead_letter_queued"], {"agent": name})

    # -- ingress side -------------------------------------------------------------------

    def enqueue(
        self, agent: TaskAgent, *, event_id: str, partition_key: str, envelope: str
    ) -> Enqueued:
        """Store one event durably (or find it stored before) and apply ``onBusy``."""
        on_busy = agent.spec.on_busy
        key = {"agent": agent.name, "partition_key": partition_key}
        new_id = f"inv_{uuid.uuid4().hex}"
        with self.connector.transaction():
            existing = self._by_event(agent.name, event_id)
            if existing is not None:
                return existing
            status, reason = "queued", None
            if on_busy in ("reject", "interrupt"):
                self.connector.fetch_one(self.queries["partition_lock"], key)
                busy = self.connector.fetch_one(self.queries["partition_in_flight"], key)
                if busy is not None and on_busy == "reject":
                    status, reason = "rejected", f"partition busy: {busy['id']} in flight"
            inserted = self.connector.execute(
                self.queries["invocation_insert"],
                {
                    **key,
                    "id": new_id,
                    "event_id": event_id,
                    "envelope": envelope,
                    "status": status,
                    "reason": reason,
                },
            )
            if not inserted:  # a concurrent delivery of the same event won the insert
                raced = self._by_event(agent.name, event_id)
                assert raced is not None
                return raced
            if on_busy == "interrupt":
                self.connector.execute(self.queries["request_cancel_running"], key)
        return Enqueued(new_id, duplicate=False, status=status)

    def _by_event(self, agent: str, event_id: str) -> Enqueued | None:
        row = self.connector.fetch_one(
            self.queries["invocation_by_event"], {"agent": agent, "event_id": event_id}
        )
        if row is None:
            return None
        return Enqueued(row["id"], duplicate=True, status=row["status"])

    # -- dispatcher side ----------------------------------------------------------------

    def claim(self, owner: str, lease_seconds: float) -> Claim | None:
        """Lease the next runnable event, or return ``None`` when nothing can run now."""
        q = self.queries
        possible = self.connector.fetch_one(q["claim_possible"])
        assert possible is not None
        if not possible["expired"] and not (
            possible["room"] and self.connector.fetch_one(q["claim_candidate"])
        ):
            return None
        with self.connector.transaction():
            self.connector.fetch_one(q["claim_lock"], {"lock_key": _CLAIM_LOCK_KEY})
            self.connector.execute(q["reap_expired"])
            row = self.connector.fetch_one(q["claim_candidate"])
            if row is None:
                return None
            agent = _manifest(row["manifest"])
            key = {"agent": row["agent"], "partition_key": row["partition_key"]}
            if agent.spec.on_busy in BATCHING:
                self.connector.execute(q["coalesce_waiting"], {**key, "leader": row["id"]})
            lease = {"owner": owner, "lease_seconds": lease_seconds}
            fenced = self.connector.fetch_one(
                q["partition_acquire"], {**key, **lease, "holder": row["id"]}
            )
            assert fenced is not None
            fence = int(fenced["fence"])
            started = self.connector.fetch_one(
                q["invocation_start"], {**lease, "id": row["id"], "fence": fence}
            )
            assert started is not None
            members = self.connector.fetch_all(q["run_envelopes"], {"leader": row["id"]})
        return Claim(
            id=row["id"],
            agent=agent,
            partition_key=row["partition_key"],
            fence=fence,
            attempt=int(started["attempts"]),
            envelopes=[member["envelope"] for member in members],
            member_ids=[member["id"] for member in members],
        )

    def renew(self, claim: Claim, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; ``False`` means it was lost (expired and taken, or fenced)."""
        params = {"id": claim.id, "fence": claim.fence, "lease_seconds": lease_seconds}
        with self.connector.transaction():
            renewed = self.connector.execute(
                self.queries["lease_renew"], {**params, "owner": owner}
            )
            if not renewed:
                return False
            self.connector.execute(
                self.queries["partition_renew"],
                {**params, "agent": claim.agent.name, "partition_key": claim.partition_key},
            )
        return True

    def finish(
        self,
        claim: Claim,
        status: str,
        *,
        exit_code: int | None = None,
        result: str | None = None,
        stderr_tail: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Record a terminal outcome and free the partition; ``Conflict`` if fenced out."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status!r}")
        self._close_turn(
            claim,
            "invocation_finish",
            {
                "status": status,
                "exit_code": exit_code,
                "result": result,
                "stderr_tail": stderr_tail,
                "reason": reason,
            },
        )

    def retry(
        self,
        claim: Claim,
        delay_seconds: float,
        *,
        exit_code: int | None = None,
        stderr_tail: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Put the event back after ``delay_seconds``; ``Conflict`` if fenced out."""
        self._close_turn(
            claim,
            "invocation_retry",
            {
                "delay_seconds": delay_seconds,
                "exit_code": exit_code,
                "stderr_tail": stderr_tail,
                "reason": reason,
            },
        )

    def _close_turn(self, claim: Claim, query: str, params: dict[str, Any]) -> None:
        key = {"agent": claim.agent.name, "partition_key": claim.partition_key}
        fenced = {"id": claim.id, "fence": claim.fence}
        with self.connector.transaction():
            if not self.connector.execute(self.queries[query], {**params, **fenced}):
                current = self.connector.fetch_one(self.queries["partition_fence"], key)
                found = current["fence"] if current else None
                raise Conflict(claim.partition_key, "fence", claim.fence, found)
            self.connector.execute(self.queries["partition_release"], {**key, **fenced})

    def poll(self, owner: str) -> tuple[int, int]:
        """(highest event sequence number, cancellations pending for ``owner``): cheap."""
        row = self.connector.fetch_one(self.queries["poll"], {"owner": owner})
        assert row is not None
        return int(row["last_seq"]), int(row["cancels"])

    def pending(self) -> int:
        """Events queued or running on any worker."""
        row = self.connector.fetch_one(self.queries["pending"])
        return int(row["n"]) if row else 0

    def cancel_requests(self, owner: str) -> list[str]:
        rows = self.connector.fetch_all(self.queries["cancel_requests"], {"owner": owner})
        return [row["id"] for row in rows]

    # -- reading ------------------------------------------------------------------------

    def invocation(self, invocation_id: str) -> dict[str, Any] | None:
        return self.connector.fetch_one(self.queries["invocation_get"], {"id": invocation_id})

    def invocations(self, agent: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        return self.connector.fetch_all(
            self.queries["invocations_list"], {"agent": agent, "limit": limit}
        )


@lru_cache(maxsize=128)
def _manifest(text: str) -> TaskAgent:
    """Stored manifests were validated on apply; parse each distinct text once."""
    return load_manifest(json.loads(text))
