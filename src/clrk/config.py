"""Where clrk keeps its local files and which databases it uses by default.

One place knows the defaults so that the CLI, the servers and the tests agree. Everything
can be overridden by environment variables (``CLRK_HOME``, ``CLRK_RUNTIME_URL``).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CLRK_HOME"
RUNTIME_URL_ENV = "CLRK_RUNTIME_URL"


# The runtime's SQLite file in a data dir (what `clrk up` uses there too).
RUNTIME_DB = "runtime.db"


def data_dir() -> Path:
    """The local data directory: ``$CLRK_HOME`` or ``./.clrk``; created on first use."""
    path = Path(os.environ.get(HOME_ENV) or ".clrk").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runtime_url() -> str:
    """Database of the runtime (manifests, inbox, invocations): SQLite in the data dir."""
    return os.environ.get(RUNTIME_URL_ENV) or f"sqlite:///{data_dir() / RUNTIME_DB}"
