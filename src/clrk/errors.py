"""One error tree for clrk.

Callers catch these, never a driver's or a library's own exceptions: each backend and
client translates at its one edge and chains the cause (``raise Conflict(...) from exc``).
Errors carry the data a caller needs to act on them, not only a message.

::

    ClrkError
    ├── ConfigError              bad configuration: unknown URL scheme, bad option
    │   ├── ManifestError        a TaskAgent manifest is invalid (names the field)
    │   └── SandboxError         the sandbox cannot run a command here (says what to fix)
    ├── StoreError               anything the state layer or the inbox reports
    │   ├── StoreUnavailable     the database cannot be reached (URL shown masked)
    │   ├── Conflict             a stale writer: version or fence moved on; nothing changed
    │   ├── AlreadyConsumed      the turn's inbound event ids were consumed before
    │   └── SerializationError   a value in the state cannot be stored (names its path)
    ├── IngressError             an event the ingress refuses (carries an HTTP status)
    │   ├── UnknownAgent         404
    │   ├── BadRequest           400 (malformed body, partition key not computable)
    │   └── PayloadTooLarge      413
    └── SlackError               the Slack Web API answered with an error
        └── PermanentSlackError  not worth retrying (channel_not_found, invalid_auth, ...)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


class ClrkError(Exception):
    """Root of every error clrk raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Python pickles an exception as ``cls(*self.args)``, but most of ours take their
        # fields, not the message: unpickling failed, and an error raised in a worker
        # process (multiprocessing) hung the parent. Rebuild from the fields instead.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConfigError(ClrkError):
    """Configuration that cannot work: an unknown URL scheme, a missing option."""


class ManifestError(ConfigError):
    """A TaskAgent manifest failed validation; ``field`` is a dotted path into it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class SandboxError(ConfigError):
    """The sandbox cannot run the command on this host; the message says what to change."""


class StoreError(ClrkError):
    """The state layer or the inbox could not do what was asked."""


class StoreUnavailable(StoreError):
    """The database cannot be reached. Senders should retry later (HTTP 503)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        self.reason = " ".join(reason.split())  # drivers' messages span lines; logs want one
        super().__init__(f"store unavailable at {self.url}: {self.reason}")


class Conflict(StoreError):
    """A commit lost a race and changed nothing.

    ``kind`` says what moved on: ``"version"`` (someone committed since this turn loaded),
    ``"fence"`` (a newer lease holder exists) or ``"lease"`` (this holder's lease expired).
    """

    def __init__(self, key: str, kind: str, expected: Any, found: Any) -> None:
        self.key = key
        self.kind = kind
        self.expected = expected
        self.found = found
        super().__init__(f"conflict on {key!r}: {kind} expected {expected!r}, found {found!r}")


class AlreadyConsumed(StoreError):
    """The inbound events this turn would consume were consumed by an earlier turn."""

    def __init__(self, key: str, event_ids: list[str]) -> None:
        self.key = key
        self.event_ids = event_ids
        super().__init__(f"events already consumed on {key!r}: {', '.join(event_ids)}")


class SerializationError(StoreError):
    """A value cannot be stored; ``path`` locates it inside the state (``$.a[2].b``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot serialize {path}: {reason}")


class IngressError(ClrkError):
    """An event the ingress refuses; ``status`` is the HTTP answer."""

    status = 400


class UnknownAgent(IngressError):
    status = 404


class BadRequest(IngressError):
    status = 400


class PayloadTooLarge(IngressError):
    status = 413


class SlackError(ClrkError):
    """The Slack Web API answered ``ok: false``; ``code`` is Slack's error string."""

    def __init__(self, code: str, method: str = "") -> None:
        self.code = code
        self.method = method
        self.retry_after: float | None = None  # seconds Slack asked to wait (a 429)
        super().__init__(f"slack {method or 'api'} failed: {code}")


class PermanentSlackError(SlackError):
    """An error that a retry cannot fix (``channel_not_found``, ``invalid_auth``, ...)."""


class ReplyPending(ClrkError):
    """A committed reply of an earlier run is still claimed and unsent: retry a little later.

    Raised by a redelivered event whose turn is already done, so that the runtime keeps
    retrying until that reply is out instead of calling the event handled.
    """

    def __init__(self, key: str, outbox_ids: list[str]) -> None:
        self.key = key
        self.outbox_ids = outbox_ids
        super().__init__(
            f"{len(outbox_ids)} reply(ies) on {key!r} committed by an earlier run are not yet "
            "delivered (claimed by a run that may have died); retry after the claim expires"
        )


def _rebuild(cls: type[ClrkError], args: tuple[Any, ...], fields: dict[str, Any]) -> ClrkError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
