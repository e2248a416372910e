"""Posting replies through Slack's Web API, safely repeatable.

``slack_sdk.WebClient`` does the HTTP, the token and the 429 handling (its
``RateLimitErrorRetryHandler`` sleeps for ``Retry-After``). This module adds what a turn's
reply needs: long text split into several messages in order, each carrying metadata that
names its outbox entry, so that a reply redelivered after a crash can be recognised in the
thread rather than posted twice; and Slack's errors mapped to clrk's, permanent ones apart.

The token may be a placeholder that an egress proxy swaps for the real one; nothing here
looks at its value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from clrk.errors import ConfigError, PermanentSlackError, SlackError

API_URL_ENV = "SLACK_API_URL"
TOKEN_ENV = "SLACK_BOT_TOKEN"
DEFAULT_API_URL = "https://slack.com/api/"
PROXY_PLACEHOLDER_TOKEN = "placeholder-injected-by-proxy"
# A request that hangs must not outlast a deliverer's hold on its outbox entry.
REQUEST_TIMEOUT_SECONDS = 10
# Slack accepts up to 40,000 characters but advises 4,000 for a readable message.
DEFAULT_MAX_CHARS = 4_000
REPLY_EVENT_TYPE = "clrk_reply"
# Errors a retry cannot fix: the channel, the membership or the token must change first.
PERMANENT_ERRORS = frozenset(
    {
        "account_inactive",
        "channel_not_found",
        "invalid_auth",
        "is_archived",
        "msg_too_long",
        "no_permission",
        "not_authed",
        "not_in_channel",
        "restricted_action",
        "token_revoked",
        "missing_scope",
        "invalid_metadata_format",
        "invalid_blocks",
    }
)


def make_client(
    *, base_url: str | None = None, token: str | None = None, max_rate_limit_retries: int = 3
) -> WebClient:
    """A WebClient on ``base_url`` (or ``$SLACK_API_URL``) with ``token`` (or
    ``$SLACK_BOT_TOKEN``), retrying 429s after ``Retry-After`` and dropped connections."""
    base_url = base_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError(
            f"no Slack token: set {TOKEN_ENV} (or {PROXY_PLACEHOLDER_TOKEN!r} behind the "
            "egress proxy)"
        )
    return WebClient(
        token=token,
        base_url=base_url.rstrip("/") + "/",
        timeout=REQUEST_TIMEOUT_SECONDS,
        retry_handlers=[
            ConnectionErrorRetryHandler(),
            RateLimitWithinDeadline(max_retry_count=max_rate_limit_retries),
        ],
    )


class RateLimitWithinDeadline(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handling (sleep ``Retry-After``, try again), but no request starts
    after ``deadline`` (``time.monotonic()``), when one is set: a caller whose hold ends at
    T sets it to T less a request's timeout (``REQUEST_TIMEOUT_SECONDS``).

    A deliverer holds its outbox entry for a while only; if it slept through a long
    ``Retry-After`` and posted after that, another deliverer that took the entry meanwhile
    would post it too: the same reply twice. Past the deadline the 429 is raised instead.
    """

    def __init__(self, max_retry_count: int = 1) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.deadline: float | None = None

    def _can_retry(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        if self.deadline is None:
            return True
        wait = _retry_after_seconds(response.headers) + 1  # slack_sdk adds up to 1 s
        return time.monotonic() + wait < self.deadline


def _retry_after_seconds(headers: dict[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                break
    return 1.0


def _past_deadline(client: WebClient) -> bool:
    return any(
        isinstance(h, RateLimitWithinDeadline)
        and h.deadline is not None
        and time.monotonic() >= h.deadline
        for h in client.retry_handlers
    )


@contextmanager
def within(client: WebClient, deadline: float | None) -> Iterator[None]:
    """Calls on ``client`` inside the block retry 429s only while ``deadline`` allows."""
    handlers = [h for h in client.retry_handlers if isinstance(h, RateLimitWithinDeadline)]
    for handler in handlers:
        handler.deadline = deadline
    try:
        yield
    finally:
        for handler in handlers:
            handler.deadline = None


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars``: at a line break when one is in
    reach, else at a space, else mid-word. The separator at a cut is dropped."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces: list[str] = []
    rest = text
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = max(window.rfind(" "), window.rfind("\t"))
        if cut <= 0:
            pieces.append(rest[:max_chars])
            rest = rest[max_chars:]
            continue
        pieces.append(rest[:cut])
        rest = rest[cut + 1 :]
    if rest or not pieces:
        pieces.append(rest)
    return [p for p in pieces if p.strip()] or [text[:max_chars]]


def post_reply(
    client: WebClient,
    *,
    channel: str,
    thread_ts: str,
    text: str,
    metadata: dict[str, Any] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    resume: bool = False,
) -> list[str]:
    """Post ``text`` in the thread, in order, split when long; return the posted ``ts``.

    ``metadata`` is Slack message metadata (``{"event_type": ..., "event_payload": {...}}``,
    the payload naming the ``outbox_id``); each piece gets ``part`` and ``parts`` added to
    its payload. With ``resume=True`` the pieces of this outbox entry already in the thread
    are skipped, which finishes a reply cut short by a crash without repeating it.

    Raises :class:`PermanentSlackError` (no retry made) for errors such as
    ``channel_not_found``, and :class:`SlackError` for the rest, rate limits included
    once the retries are spent.
    """
    pieces = split_text(text, max_chars)
    done: set[int] = set()
    outbox_id = _outbox_id(metadata)
    if resume and outbox_id is not None:
        done = reply_parts(client, channel=channel, thread_ts=thread_ts, outbox_id=outbox_id)
    posted: list[str] = []
    for number, piece in enumerate(pieces, start=1):
        if number in done:
            continue
        if _past_deadline(client):  # the pieces before took the time (see `within`)
            raise SlackError("deadline_passed", "chat.postMessage")
        kwargs: dict[str, Any] = {"channel": channel, "thread_ts": thread_ts, "text": piece}
        if metadata is not None:
            payload = {**metadata.get("event_payload", {}), "part": number, "parts": len(pieces)}
            kwargs["metadata"] = {**metadata, "event_payload": payload}
        answer = _call(client, "chat.postMessage", client.chat_postMessage, **kwargs)
        posted.append(answer["ts"])
    return posted


def reply_parts(client: WebClient, *, channel: str, thread_ts: str, outbox_id: str) -> set[int]:
    """The part numbers of the reply for ``outbox_id`` already in the thread."""
    found: set[int] = set()
    cursor: str | None = None
    while True:
        try:
            page = client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, cursor=cursor, limit=200
            )
        except SlackApiError as exc:
            if exc.response.get("error") == "thread_not_found":
                return found
            raise _translate(exc, "conversations.replies") from exc
        for message in page.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("outbox_id") == outbox_id:
                found.add(int(payload.get("part", 1)))
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor:
            return found


def find_reply(client: WebClient, *, channel: str, thread_ts: str, outbox_id: str) -> bool:
    """Whether a reply for ``outbox_id`` is already in the thread (read from metadata)."""
    return bool(reply_parts(client, channel=channel, thread_ts=thread_ts, outbox_id=outbox_id))


def reply_metadata(outbox_id: str, **payload: Any) -> dict[str, Any]:
    """The metadata that marks a clrk reply (see docs/contracts.md, Slack reply path)."""
    return {"event_type": REPLY_EVENT_TYPE, "event_payload": {"outbox_id": outbox_id, **payload}}


def _outbox_id(metadata: dict[str, Any] | None) -> str | None:
    value = ((metadata or {}).get("event_payload") or {}).get("outbox_id")
    return value if isinstance(value, str) else None


def _call(client: WebClient, method: str, function: Any, **kwargs: Any) -> Any:
    try:
        return function(**kwargs)
    except SlackApiError as exc:
        raise _translate(exc, method) from exc


def _translate(exc: SlackApiError, method: str) -> SlackError:
    code = str(exc.response.get("error") or f"http_{exc.response.status_code}")
    if code in PERMANENT_ERRORS:
        return PermanentSlackError(code, method)
    error = SlackError(code, method)
    if exc.response.status_code == 429:
        error.retry_after = _retry_after_seconds(dict(exc.response.headers or {}))
    return error
