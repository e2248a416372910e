"""clrk.state: key in, state in, state out, key out.

``open_store(url)`` / ``open_async_store(url)`` give a store whose turns never lose an update
or run twice for one event (see ``store.py``). The connector layer (``open_connector``,
``run_migrations``, ``load_queries``) is public so that other packages keeping tables (the
runtime inbox, the LangGraph saver) share one driver edge, one error mapping and one
migration lock.
"""

from clrk.errors import AlreadyConsumed, Conflict, SerializationError
from clrk.state._rows import OutboxEntry, Snapshot, Turn
from clrk.state.aio import AsyncStore, open_async_store
from clrk.state.connector import SUPPORTED_SCHEMES, Connector, open_connector
from clrk.state.migrate import run_migrations
from clrk.state.queries import load_queries
from clrk.state.store import Store, open_store

__all__ = [
    "SUPPORTED_SCHEMES",
    "AlreadyConsumed",
    "AsyncStore",
    "Conflict",
    "Connector",
    "OutboxEntry",
    "SerializationError",
    "Snapshot",
    "Store",
    "Turn",
    "load_queries",
    "open_async_store",
    "open_connector",
    "open_store",
    "run_migrations",
]
