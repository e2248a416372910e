-- The runtime's tables: registered agents, the inbox of invocations, partition leases.
-- Times are epoch seconds (real) from the database clock.

create table clrk_agents (
    name text primary key,
    manifest text not null,            -- the validated manifest, JSON, wire spelling
    max_concurrent integer not null,
    on_busy text not null,
    max_retries integer not null,
    backoff_seconds real not null,
    applied_at real not null
);

-- One row per inbound event. An event coalesced into another's run points at it.
create table clrk_invocations (
    seq integer primary key autoincrement,   -- arrival order
    id text not null unique,
    agent text not null,
    event_id text not null,
    partition_key text not null,
    envelope text not null,
    -- queued | running | succeeded | dead | rejected | cancelled | coalesced
    status text not null,
    attempts integer not null default 0,
    not_before real not null,
    received_at real not null,
    started_at real,
    finished_at real,
    lease_owner text,
    lease_expires real,
    fence integer,
    cancel_requested integer not null default 0,
    coalesced_into text,
    exit_code integer,
    result text,
    stderr_tail text,
    reason text,
    unique (agent, event_id)
);

create index clrk_invocations_status on clrk_invocations (status, not_before);
create index clrk_invocations_partition on clrk_invocations (agent, partition_key, status);
create index clrk_invocations_leader on clrk_invocations (coalesced_into);

-- The lease on a partition key: who holds it, until when, and its fencing token, which
-- grows with every new lease and is never reset.
create table clrk_partitions (
    agent text not null,
    partition_key text not null,
    fence integer not null,
    holder text,
    lease_owner text,
    lease_expires real,
    primary key (agent, partition_key)
);
