"""clrk.state: key in, state in, state out, key out.

The connector layer (:func:`open_connector`, :func:`run_migrations`, :func:`load_queries`)
is public so that other packages keeping tables (the runtime inbox, the LangGraph saver)
share one driver edge, one error mapping and one migration lock.
"""

from clrk.state.connector import SUPPORTED_SCHEMES, Connector, open_connector
from clrk.state.migrate import run_migrations
from clrk.state.queries import load_queries

__all__ = [
    "SUPPORTED_SCHEMES",
    "Connector",
    "load_queries",
    "open_connector",
    "run_migrations",
]
