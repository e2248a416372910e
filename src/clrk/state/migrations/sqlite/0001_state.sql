-- One row per key: the current state, its version, the highest fencing token seen and the
-- current lease. Keeping lease and fence beside the state lets a turn load in one query.
create table clrk_state (
    key text primary key,
    version integer not null default 0,
    kind text not null default 'none' check (kind in ('none', 'json', 'bytes')),
    value blob,
    fence integer not null default 0,
    lease_owner text,
    lease_expires_at real,
    updated_at real not null
);

-- Inbound event ids each key has consumed: a second turn for the same event is refused.
create table clrk_consumed (
    key text not null,
    event_id text not null,
    version integer not null,
    consumed_at real not null,
    primary key (key, event_id)
);

-- Side effects recorded with the state they answer; deliverable once committed.
create table clrk_outbox (
    id text primary key,
    key text not null,
    version integer not null,
    seq integer not null,
    payload blob not null,
    created_at real not null,
    claimed_until real,
    attempts integer not null default 0,
    sent_at real
);
create index clrk_outbox_key on clrk_outbox (key);
create index clrk_outbox_unsent on clrk_outbox (created_at) where sent_at is null;

-- Past versions, written only by stores opened with keep_history.
create table clrk_history (
    key text not null,
    version integer not null,
    kind text not null,
    value blob,
    fence integer not null,
    committed_at real not null,
    primary key (key, version)
);
