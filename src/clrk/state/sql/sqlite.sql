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
