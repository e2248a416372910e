-- LangGraph checkpoints on clrk. One row per checkpoint, without its channel values.
-- `versions` maps each channel to its version as text: the load joins it to the blobs.
-- `checkpoint` and `metadata` are the saver's serde output, so they round-trip exactly.
create table clrk_lg_checkpoints (
    thread_id text not null,
    checkpoint_ns text not null default '',
    checkpoint_id text not null,
    parent_checkpoint_id text,
    checkpoint_type text not null,
    checkpoint blob not null,
    metadata_type text not null,
    metadata blob not null,
    run_id text,
    versions text not null,
    primary key (thread_id, checkpoint_ns, checkpoint_id)
);
create index clrk_lg_checkpoints_run_id on clrk_lg_checkpoints (run_id) where run_id is not null;

-- One row per (channel, version). kind: 'value' (a serde blob), 'list' (a whole list, one
-- serde blob per item), 'delta' (items kept from `base_version` plus appended items) or
-- 'empty' (the channel had no value). `depth` counts deltas down to the nearest whole list;
-- `chain_bytes` sums their sizes: the saver compacts (writes a whole list) when either grows.
create table clrk_lg_blobs (
    thread_id text not null,
    checkpoint_ns text not null default '',
    channel text not null,
    version text not null,
    kind text not null check (kind in ('value', 'list', 'delta', 'empty')),
    base_version text,
    depth integer not null default 0,
    chain_bytes integer not null default 0,
    value_type text,
    value blob,
    primary key (thread_id, checkpoint_ns, channel, version)
);

-- Pending writes of a checkpoint's tasks.
create table clrk_lg_writes (
    thread_id text not null,
    checkpoint_ns text not null default '',
    checkpoint_id text not null,
    task_id text not null,
    idx integer not null,
    channel text not null,
    value_type text not null,
    value blob not null,
    task_path text not null default '',
    primary key (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
