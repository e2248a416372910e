-- SQL of the LangGraph saver for SQLite. Same query names as postgres.sql, except that
-- Postgres writes a checkpoint (or a task's writes) in one statement (put_checkpoint,
-- put_writes_*) where SQLite runs the step queries below in one BEGIN IMMEDIATE
-- transaction: SQLite is in-process, so several statements cost no round trip.

-- name: load
-- A checkpoint (the latest of the thread and namespace, or :checkpoint_id), the blobs of
-- its channel versions with their delta chains down to a whole copy, and its pending
-- writes, in one query. `part` tells the rows apart; the other columns are shared:
--   checkpoint: a=id, b=parent id, c=versions, t1/d1=checkpoint, t2/d2=metadata
--   blob:       a=channel, b=version, c=kind, n=depth, m=chain_bytes, t1/d1=value, t2=base
--   write:      a=task_id, b=channel, c=task_path, n=idx, t1/d1=value
with recursive cp as (
    select * from clrk_lg_checkpoints
    where thread_id = :thread_id and checkpoint_ns = :checkpoint_ns
      and (:checkpoint_id is null or checkpoint_id = :checkpoint_id)
    order by checkpoint_id desc
    limit 1
),
chain as (
    select b.channel, b.version, b.kind, b.base_version, b.depth, b.chain_bytes,
           b.value_type, b.value
    from cp, json_each(cp.versions) as v
    join clrk_lg_blobs b
      on b.thread_id = cp.thread_id and b.checkpoint_ns = cp.checkpoint_ns
     and b.channel = v.key and b.version = v.value
    union all
    select b.channel, b.version, b.kind, b.base_version, b.depth, b.chain_bytes,
           b.value_type, b.value
    from chain
    join clrk_lg_blobs b
      on b.thread_id = :thread_id and b.checkpoint_ns = :checkpoint_ns
     and b.channel = chain.channel and b.version = chain.base_version
    where chain.kind = 'delta'
)
select 'checkpoint' as part, checkpoint_id as a, parent_checkpoint_id as b, versions as c,
       null as n, null as m, checkpoint_type as t1, checkpoint as d1,
       metadata_type as t2, metadata as d2
from cp
union all
select 'blob', channel, version, kind, depth, chain_bytes, value_type, value, base_version, null
from chain
union all
select 'write', w.task_id, w.channel, w.task_path, w.idx, null, w.value_type, w.value, null, null
from clrk_lg_writes w
join cp on w.thread_id = cp.thread_id and w.checkpoint_ns = cp.checkpoint_ns
       and w.checkpoint_id = cp.checkpoint_id

-- name: fence_upsert
-- Returns a row only when :fence is at least the highest fence seen for :fence_key (kept
-- in clrk_state, beside the state layer's own); no row means a newer holder exists.
insert into clrk_state (key, fence, updated_at)
values (:fence_key, :fence, (julianday('now') - 2440587.5) * 86400.0)
on conflict (key) do update set fence = excluded.fence where clrk_state.fence <= excluded.fence
returning fence

-- name: fence_found
select fence from clrk_state where key = :fence_key

-- name: blob_exists
select 1 as found from clrk_lg_blobs
where thread_id = :thread_id and checkpoint_ns = :checkpoint_ns
  and channel = :channel and version = :version

-- name: blob_insert
insert into clrk_lg_blobs (thread_id, checkpoint_ns, channel, version, kind, base_version,
                           depth, chain_bytes, value_type, value)
values (:thread_id, :checkpoint_ns, :channel, :version, :kind, :base_version, :depth,
        :chain_bytes, :value_type, :value)
on conflict do nothing

-- name: checkpoint_upsert
insert into clrk_lg_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                 checkpoint_type, checkpoint, metadata_type, metadata, run_id,
                                 versions)
values (:thread_id, :checkpoint_ns, :checkpoint_id, :parent_checkpoint_id, :checkpoint_type,
        :checkpoint, :metadata_type, :metadata, :run_id, :versions_json)
on conflict (thread_id, checkpoint_ns, checkpoint_id) do update set
    parent_checkpoint_id = excluded.parent_checkpoint_id,
    checkpoint_type = excluded.checkpoint_type,
    checkpoint = excluded.checkpoint,
    metadata_type = excluded.metadata_type,
    metadata = excluded.metadata,
    run_id = excluded.run_id,
    versions = excluded.versions

-- name: write_insert
-- Regular task writes: a write already stored for (task, idx) is kept (idempotent retry).
insert into clrk_lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,
                            value_type, value, task_path)
values (:thread_id, :checkpoint_ns, :checkpoint_id, :task_id, :idx, :channel, :value_type,
        :value, :task_path)
on conflict do nothing

-- name: write_upsert
-- Special writes only (error, interrupt, resume, scheduled): the latest replaces the last.
insert into clrk_lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,
                            value_type, value, task_path)
values (:thread_id, :checkpoint_ns, :checkpoint_id, :task_id, :idx, :channel, :value_type,
        :value, :task_path)
on conflict (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) do update set
    channel = excluded.channel,
    value_type = excluded.value_type,
    value = excluded.value,
    task_path = excluded.task_path

-- name: list_checkpoints
-- Candidates for list(), newest first; the metadata filter is applied by the saver.
select thread_id, checkpoint_ns, checkpoint_id, metadata_type, metadata
from clrk_lg_checkpoints
where (:thread_id is null or thread_id = :thread_id)
  and (:checkpoint_ns is null or checkpoint_ns = :checkpoint_ns)
  and (:before is null or checkpoint_id < :before)
order by checkpoint_id desc

-- name: delete_thread_checkpoints
delete from clrk_lg_checkpoints where thread_id = :thread_id

-- name: delete_thread_blobs
delete from clrk_lg_blobs where thread_id = :thread_id

-- name: delete_thread_writes
delete from clrk_lg_writes where thread_id = :thread_id

-- name: delete_run_checkpoints
-- Returns the threads touched, so that their orphaned writes and blobs can be dropped.
delete from clrk_lg_checkpoints where run_id = :run_id returning thread_id

-- name: prune_keep_latest
-- Keep only the newest checkpoint of each namespace of the thread.
delete from clrk_lg_checkpoints as c
where c.thread_id = :thread_id
  and c.checkpoint_id < (
      select max(k.checkpoint_id) from clrk_lg_checkpoints k
      where k.thread_id = c.thread_id and k.checkpoint_ns = c.checkpoint_ns
  )

-- name: delete_orphan_writes
delete from clrk_lg_writes as w
where w.thread_id = :thread_id
  and not exists (
      select 1 from clrk_lg_checkpoints c
      where c.thread_id = w.thread_id and c.checkpoint_ns = w.checkpoint_ns
        and c.checkpoint_id = w.checkpoint_id
  )

-- name: delete_orphan_blobs
-- A blob stays while a checkpoint of the thread uses it, directly or as a delta base.
with recursive live (checkpoint_ns, channel, version) as (
    select c.checkpoint_ns, v.key, v.value
    from clrk_lg_checkpoints c, json_each(c.versions) as v
    where c.thread_id = :thread_id
    union
    select b.checkpoint_ns, b.channel, b.base_version
    from live l
    join clrk_lg_blobs b
      on b.thread_id = :thread_id and b.checkpoint_ns = l.checkpoint_ns
     and b.channel = l.channel and b.version = l.version
    where b.kind = 'delta'
)
delete from clrk_lg_blobs as b
where b.thread_id = :thread_id
  and not exists (
      select 1 from live l
      where l.checkpoint_ns = b.checkpoint_ns and l.channel = b.channel
        and l.version = b.version
  )

-- name: copy_thread_checkpoints
insert into clrk_lg_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                 checkpoint_type, checkpoint, metadata_type, metadata, run_id,
                                 versions)
select :target, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
       checkpoint, metadata_type, metadata, run_id, versions
from clrk_lg_checkpoints where thread_id = :source
on conflict do nothing

-- name: copy_thread_blobs
insert into clrk_lg_blobs (thread_id, checkpoint_ns, channel, version, kind, base_version,
                           depth, chain_bytes, value_type, value)
select :target, checkpoint_ns, channel, version, kind, base_version, depth, chain_bytes,
       value_type, value
from clrk_lg_blobs where thread_id = :source
on conflict do nothing

-- name: copy_thread_writes
insert into clrk_lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,
                            value_type, value, task_path)
select :target, checkpoint_ns, checkpoint_id, task_id, idx, channel, value_type, value,
       task_path
from clrk_lg_writes where thread_id = :source
on conflict do nothing
