"""The error tree: every error survives a trip between processes."""

from __future__ import annotations

import pickle

import pytest

from clrk import errors
from clrk.manifest import InvalidManifest


@pytest.mark.parametrize(
    "error",
    [
        errors.StoreUnavailable("postgresql://u:secret@h/db", "database is locked"),
        errors.Conflict("k", "fence", 3, 5),
        errors.AlreadyConsumed("k", ["e1", "e2"]),
        errors.SerializationError("$.a[2]", "not JSON"),
        errors.ManifestError("spec.onBusy", "must be one of ..."),
        InvalidManifest([errors.ManifestError("a", "x"), errors.ManifestError("b", "y")]),
        errors.PermanentSlackError("channel_not_found", "chat.postMessage"),
        errors.ReplyPending("k", ["o1"]),
        errors.BadRequest("body is not JSON"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_with_their_fields(error: errors.ClrkError) -> None:
    """Bug: errors with their own constructor could not be unpickled, so one raised in a
    multiprocessing worker killed the pool's result thread and hung the parent."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert repr(copy.__dict__) == repr(error.__dict__)
    assert "secret" not in pickle.dumps(error).decode("latin-1")
