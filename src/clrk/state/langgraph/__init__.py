"""LangGraph checkpointer on clrk's store: ``ClrkSaver.from_url(DATABASE_URL)``.

A drop-in for LangGraph's Postgres and SQLite savers that stores list channels as deltas,
loads in one query, and refuses writes from a superseded lease holder (``CLRK_FENCE``).
"""

from clrk.state.langgraph.saver import FENCE_ENV, PARTITION_KEY_ENV, ClrkSaver

__all__ = ["FENCE_ENV", "PARTITION_KEY_ENV", "ClrkSaver"]
