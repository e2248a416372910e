-- SQL of the runtime (agents, inbox, partition leases) for SQLite.
-- Same query names as postgres.sql (a test checks). Parameters are :name style.
-- NOW is the database clock in epoch seconds: (julianday('now') - 2440587.5) * 86400.0

-- name: agent_upsert
-- Re-applying a manifest replaces it (that is how a connection string is rotated).
insert into clrk_agents (name, manifest, max_concurrent, on_busy, max_retries, backoff_seconds, applied_at)
values (:name, :manifest, :max_concurrent, :on_busy, :max_retries, :backoff_seconds,
        (julianday('now') - 2440587.5) * 86400.0)
on conflict (name) do update set
    manifest = excluded.manifest,
    max_concurrent = excluded.max_concurrent,
    on_busy = excluded.on_busy,
    max_retries = excluded.max_retries,
    backoff_seconds = excluded.backoff_seconds,
    applied_at = excluded.applied_at

-- name: agent_get
select name, manifest, applied_at from clrk_agents where name = :name

-- name: agent_list
select name, manifest, applied_at from clrk_agents order by name

-- name: agent_delete
delete from clrk_agents where name = :name

-- name: agent_dead_letter_queued
-- Events still waiting for a deleted agent can never run: say so instead of hiding them.
update clrk_invocations
set status = 'dead', reason = 'agent deleted before the event ran',
    finished_at = (julianday('now') - 2440587.5) * 86400.0
where agent = :agent and status = 'queued'

-- name: partition_lock
-- Serializes enqueue decisions on one partition; the write lock of BEGIN IMMEDIATE does it here.
select :agent as agent, :partition_key as partition_key

-- name: invocation_insert
-- Dedupe on (agent, event id): a redelivered event inserts nothing.
insert into clrk_invocations
    (id, agent, event_id, partition_key, envelope, status, not_before, received_at, reason)
values (:id, :agent, :event_id, :partition_key, :envelope, :status,
        (julianday('now') - 2440587.5) * 86400.0, (julianday('now') - 2440587.5) * 86400.0,
        :reason)
on conflict (agent, event_id) do nothing

-- name: invocation_by_event
select id, status from clrk_invocations where agent = :agent and event_id = :event_id

-- name: partition_in_flight
-- An invocation queued or running on this partition (what onBusy reacts to).
select id from clrk_invocations
where agent = :agent and partition_key = :partition_key and status in ('queued', 'running')
order by seq limit 1

-- name: request_cancel_running
-- onBusy interrupt: the dispatcher that runs it sees the flag, kills the run and queues
-- its event again, to run together with the newer ones.
update clrk_invocations set cancel_requested = 1
where agent = :agent and partition_key = :partition_key and status = 'running'

-- name: claim_possible
-- Read without the write lock before claiming: most attempts find nothing to do, and
-- holding the lock for them would delay the ingress's inserts.
select
    exists (select 1 from clrk_invocations
            where status = 'running' and lease_expires < (julianday('now') - 2440587.5) * 86400.0) as expired,
    exists (select 1 from clrk_agents a
            where a.max_concurrent > (select count(*) from clrk_invocations r
                                      where r.agent = a.name and r.status = 'running')
              and exists (select 1 from clrk_invocations w
                          where w.agent = a.name and w.status = 'queued'
                            and w.not_before <= (julianday('now') - 2440587.5) * 86400.0)) as room

-- name: claim_lock
-- Claims are serialized; BEGIN IMMEDIATE already holds the write lock.
select :lock_key as lock_key

-- name: reap_expired
-- Runs whose worker stopped renewing their lease: retry them, or dead-letter when spent.
update clrk_invocations
set status = case
        when attempts > coalesce(
            (select max_retries from clrk_agents a where a.name = clrk_invocations.agent), -1)
        then 'dead' else 'queued' end,
    reason = 'lease expired: worker ' || coalesce(lease_owner, '?') || ' stopped renewing it',
    not_before = (julianday('now') - 2440587.5) * 86400.0,
    finished_at = case
        when attempts > coalesce(
            (select max_retries from clrk_agents a where a.name = clrk_invocations.agent), -1)
        then (julianday('now') - 2440587.5) * 86400.0 end,
    lease_owner = null,
    lease_expires = null
where status = 'running' and lease_expires < (julianday('now') - 2440587.5) * 86400.0

-- name: claim_candidate
-- The oldest runnable event: its agent below maxConcurrent, its partition free, and no
-- older event of its partition still waiting (arrival order within a partition).
select i.id, i.agent, i.partition_key, a.manifest, a.on_busy
from clrk_invocations i
join clrk_agents a on a.name = i.agent
where i.status = 'queued'
  and i.not_before <= (julianday('now') - 2440587.5) * 86400.0
  and (select count(*) from clrk_invocations r
       where r.agent = i.agent and r.status = 'running') < a.max_concurrent
  and not exists (
      select 1 from clrk_partitions p
      where p.agent = i.agent and p.partition_key = i.partition_key
        and p.holder is not null
        and p.lease_expires > (julianday('now') - 2440587.5) * 86400.0)
  and not exists (
      select 1 from clrk_invocations o
      where o.agent = i.agent and o.partition_key = i.partition_key
        and o.status = 'queued' and o.seq < i.seq)
order by i.seq
limit 1

-- name: coalesce_waiting
-- onBusy coalesce and interrupt: every other event waiting on the partition joins the
-- leader's run.
update clrk_invocations set status = 'coalesced', coalesced_into = :leader
where agent = :agent and partition_key = :partition_key and status = 'queued' and id <> :leader

-- name: partition_acquire
-- A new lease on the partition; the fencing token grows by one and is never reset.
insert into clrk_partitions (agent, partition_key, fence, holder, lease_owner, lease_expires)
values (:agent, :partition_key, 1, :holder, :owner,
        (julianday('now') - 2440587.5) * 86400.0 + :lease_seconds)
on conflict (agent, partition_key) do update set
    fence = clrk_partitions.fence + 1,
    holder = excluded.holder,
    lease_owner = excluded.lease_owner,
    lease_expires = excluded.lease_expires
returning fence

-- name: invocation_start
update clrk_invocations
set status = 'running', attempts = attempts + 1, fence = :fence, lease_owner = :owner,
    lease_expires = (julianday('now') - 2440587.5) * 86400.0 + :lease_seconds,
    started_at = (julianday('now') - 2440587.5) * 86400.0, finished_at = null,
    cancel_requested = 0
where id = :id
returning attempts

-- name: run_envelopes
-- What the run reads: the leader's envelope and those coalesced into it, in arrival order.
select id, envelope from clrk_invocations
where id = :leader or coalesced_into = :leader
order by seq

-- name: lease_renew
-- A lease that has run out is not renewed: another worker may already be taking it.
update clrk_invocations
set lease_expires = (julianday('now') - 2440587.5) * 86400.0 + :lease_seconds
where id = :id and fence = :fence and status = 'running' and lease_owner = :owner
  and lease_expires >= (julianday('now') - 2440587.5) * 86400.0

-- name: partition_renew
update clrk_partitions
set lease_expires = (julianday('now') - 2440587.5) * 86400.0 + :lease_seconds
where agent = :agent and partition_key = :partition_key and holder = :id and fence = :fence

-- name: invocation_finish
-- Terminal outcome, only for the lease holder with the current fence (a late writer
-- changes nothing).
update clrk_invocations
set status = :status, finished_at = (julianday('now') - 2440587.5) * 86400.0,
    exit_code = :exit_code, result = :result, stderr_tail = :stderr_tail, reason = :reason,
    lease_owner = null, lease_expires = null
where id = :id and fence = :fence and status = 'running'

-- name: invocation_retry
update clrk_invocations
set status = 'queued',
    not_before = (julianday('now') - 2440587.5) * 86400.0 + :delay_seconds,
    exit_code = :exit_code, stderr_tail = :stderr_tail, reason = :reason,
    lease_owner = null, lease_expires = null
where id = :id and fence = :fence and status = 'running'

-- name: partition_release
update clrk_partitions set holder = null, lease_owner = null, lease_expires = null
where agent = :agent and partition_key = :partition_key and holder = :id and fence = :fence

-- name: partition_fence
select fence, holder from clrk_partitions where agent = :agent and partition_key = :partition_key

-- name: poll
-- The dispatcher's cheap check, every few tens of milliseconds: anything new, anything
-- of mine to cancel.
select
    (select coalesce(max(seq), 0) from clrk_invocations) as last_seq,
    (select count(*) from clrk_invocations
     where status = 'running' and cancel_requested = 1 and lease_owner = :owner) as cancels

-- name: cancel_requests
select id from clrk_invocations
where status = 'running' and cancel_requested = 1 and lease_owner = :owner

-- name: invocation_get
select id, seq, agent, event_id, partition_key, status, attempts, received_at, started_at,
       finished_at, fence, exit_code, result, stderr_tail, reason, coalesced_into, lease_owner
from clrk_invocations where id = :id

-- name: invocations_list
select id, seq, agent, event_id, partition_key, status, attempts, received_at, started_at,
       finished_at, fence, exit_code, result, stderr_tail, reason, coalesced_into, lease_owner
from clrk_invocations
where (:agent is null or agent = :agent)
order by seq desc
limit :limit

-- name: pending
-- Events not yet settled, in any worker (the drain mode waits for zero).
select count(*) as n from clrk_invocations where status in ('queued', 'running')
