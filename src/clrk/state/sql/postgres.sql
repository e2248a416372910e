-- SQL of clrk.state for Postgres. Same query names as sqlite.sql (a test checks).
-- Parameters are :name style (the connector rewrites them for psycopg).

-- name: migrations_lock
-- Held until the migration transaction ends; concurrent starters wait here.
select pg_advisory_xact_lock(:lock_key)

-- name: migrations_create_table
create table if not exists clrk_migrations (
    component text not null,
    version integer not null,
    name text not null,
    applied_at timestamptz not null default now(),
    primary key (component, version)
);

-- name: migrations_latest
-- The cheap check done at every open: the highest version applied for a component.
select max(version) as version from clrk_migrations where component = :component

-- name: migrations_applied
select version from clrk_migrations where component = :component

-- name: migrations_record
insert into clrk_migrations (component, version, name) values (:component, :version, :name)
