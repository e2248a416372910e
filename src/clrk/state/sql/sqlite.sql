-- SQL of clrk.state for SQLite. Same query names as postgres.sql (a test checks).
-- Parameters are :name style. Times are epoch seconds from the database clock.

-- name: migrations_lock
-- The BEGIN IMMEDIATE that opened the transaction already holds the database write lock.
select :lock_key as lock_key

-- name: migrations_create_table
create table if not exists clrk_migrations (
    component text not null,
    version integer not null,
    name text not null,
    applied_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    primary key (component, version)
);

-- name: migrations_latest
-- The cheap check done at every open: the highest version applied for a component.
select max(version) as version from clrk_migrations where component = :component

-- name: migrations_applied
select version from clrk_migrations where component = :component

-- name: migrations_record
insert into clrk_migrations (component, version, name) values (:component, :version, :name)

-- name: turn_load
-- Start a turn in one statement: refuse it if any of :consumes (a JSON array) was consumed
-- on this key; otherwise take the lease and return the state. Without :fence, the lease must
-- be free or expired and the fence grows by one; with :fence (the dispatcher's token), it
-- must not be lower than the highest fence seen, which it becomes. No row back = refused.
insert into clrk_state (key, version, kind, value, fence, lease_owner, lease_expires_at, updated_at)
select :key, 0, 'none', null, coalesce(:fence, 1), :owner, clock.now + :lease_seconds, clock.now
from (select (julianday('now') - 2440587.5) * 86400.0 as now) as clock
where not exists (
    select 1 from clrk_consumed as c
    where c.key = :key and c.event_id in (select value from json_each(:consumes))
)
on conflict (key) do update set
    fence = coalesce(:fence, clrk_state.fence + 1),
    lease_owner = excluded.lease_owner,
    lease_expires_at = excluded.lease_expires_at
where case
    when :fence is null
        then clrk_state.lease_expires_at is null or clrk_state.lease_expires_at <= excluded.updated_at
    else :fence >= clrk_state.fence
end
returning version, kind, value, fence

-- name: turn_consumed
-- Which of :consumes were consumed already (explains a refused turn_load).
select event_id from clrk_consumed
where key = :key and event_id in (select value from json_each(:consumes))
order by event_id

-- name: turn_commit
-- Commit a turn: new state, version + 1, lease released -- only if nobody moved the
-- version, the fence or the lease since turn_load. No row back = Conflict, nothing changed.
-- On SQLite the turn_commit_* statements below follow in the same transaction.
update clrk_state set
    version = version + 1,
    kind = :kind,
    value = :value,
    lease_owner = null,
    lease_expires_at = null,
    updated_at = (julianday('now') - 2440587.5) * 86400.0
where key = :key and version = :version and fence = :fence and lease_owner = :owner
    and (not :check_expiry or lease_expires_at > (julianday('now') - 2440587.5) * 86400.0)
returning version

-- name: turn_commit_consumed
insert into clrk_consumed (key, event_id, version, consumed_at)
select :key, value, :version + 1, (julianday('now') - 2440587.5) * 86400.0
from json_each(:consumes)

-- name: turn_commit_outbox
-- :outbox is a JSON array of {"id", "seq", "payload": "<JSON text>"}.
insert into clrk_outbox (id, key, version, seq, payload, created_at)
select
    json_extract(value, '$.id'), :key, :version + 1, json_extract(value, '$.seq'),
    cast(json_extract(value, '$.payload') as blob), (julianday('now') - 2440587.5) * 86400.0
from json_each(:outbox)

-- name: turn_commit_history
insert into clrk_history (key, version, kind, value, fence, committed_at)
select key, version, kind, value, fence, updated_at from clrk_state
where key = :key and :keep_history

-- name: turn_release
-- Give the lease back after a turn that did not commit, so the next one need not wait.
update clrk_state set lease_owner = null, lease_expires_at = null
where key = :key and lease_owner = :owner

-- name: state_get
-- The key's row with the database clock, to read a state or explain a refused turn.
select
    key, version, kind, value, fence, lease_owner, lease_expires_at, updated_at,
    (julianday('now') - 2440587.5) * 86400.0 as now
from clrk_state where key = :key

-- name: state_keys
select key from clrk_state
where version > 0 and substr(key, 1, length(:prefix)) = :prefix
order by key limit :limit

-- name: state_history
select key, version, kind, value, fence, committed_at as updated_at
from clrk_history where key = :key order by version

-- name: outbox_pending
-- Committed entries not yet marked sent, oldest first.
select id, key, version, seq, payload, created_at, attempts
from clrk_outbox where sent_at is null
order by created_at, key, version, seq limit :limit

-- name: outbox_pending_for_key
-- The same, for one key: what an earlier run on it left unsent.
select id, key, version, seq, payload, created_at, attempts
from clrk_outbox where key = :key and sent_at is null
order by created_at, version, seq limit :limit

-- name: outbox_claim
-- Like outbox_pending, but takes the entries for :claim_seconds so that concurrent
-- deliverers do not send the same entry at once; an expired claim is taken again. With
-- :key, only that key's entries.
update clrk_outbox set
    claimed_until = (julianday('now') - 2440587.5) * 86400.0 + :claim_seconds,
    attempts = attempts + 1
where id in (
    select id from clrk_outbox
    where sent_at is null and (:key is null or key = :key)
        and (claimed_until is null or claimed_until <= (julianday('now') - 2440587.5) * 86400.0)
    order by created_at, key, version, seq limit :limit
)
returning id, key, version, seq, payload, created_at, attempts

-- name: outbox_release
-- Hand a claimed entry back before its claim runs out (the deliverer gave up for now),
-- to be taken again after :after seconds (what the receiver asked, e.g. Retry-After).
update clrk_outbox set claimed_until = (julianday('now') - 2440587.5) * 86400.0 + :after
where id = :id and sent_at is null

-- name: outbox_mark_sent
update clrk_outbox set sent_at = (julianday('now') - 2440587.5) * 86400.0
where id = :id and sent_at is null

-- name: outbox_mark_failed
-- Settle an entry that can never be delivered, keeping the reason.
update clrk_outbox set
    sent_at = (julianday('now') - 2440587.5) * 86400.0, failure = :failure
where id = :id and sent_at is null

-- name: thread_delete_state
delete from clrk_state where key = :key

-- name: thread_delete_consumed
delete from clrk_consumed where key = :key

-- name: thread_delete_outbox
delete from clrk_outbox where key = :key

-- name: thread_delete_history
delete from clrk_history where key = :key
