-- One row per key: the current state, its version, the highest fencing token seen and the
-- current lease. Keeping lease and fence beside the state lets a turn load in one query.
-- Times are epoch seconds (double precision), from the database clock.
create table clrk_state (
    key text primary key,
    version bigint not null default 0,
    kind text not null default 'none' check (kind in ('none', 'json', 'bytes')),
    value bytea,
    fence bigint not null default 0,
    lease_owner text,
    lease_expires_at double precision,
    updated_at double precision not null
);

-- Inbound event ids each key has consumed: a second turn for the same event is refused.
create table clrk_consumed (
    key text not null,
    event_id text not null,
    version bigint not null,
    consumed_at double precision not null,
    primary key (key, event_id)
);

-- Side effects recorded with the state they answer; deliverable once committed.
create table clrk_outbox (
    id text primary key,
    key text not null,
    version bigint not null,
    seq integer not null,
    payload bytea not null,
    created_at double precision not null,
    claimed_until double precision,
    attempts integer not null default 0,
    sent_at double precision
);
create index clrk_outbox_key on clrk_outbox (key);
create index clrk_outbox_unsent on clrk_outbox (created_at) where sent_at is null;

-- Past versions, written only by stores opened with keep_history.
create table clrk_history (
    key text not null,
    version bigint not null,
    kind text not null,
    value bytea,
    fence bigint not null,
    committed_at double precision not null,
    primary key (key, version)
);
