"""CloudEvents in and out: the envelope every agent run reads on stdin.

The envelope is a CloudEvents 1.0 event in structured JSON, built and parsed with the
``cloudevents`` SDK so that any CloudEvents tooling reads what clrk writes. Its ``id`` is
the sender's own event id when there is one (that is what makes retried deliveries
deduplicate), its ``subject`` the partition key, and it carries the W3C ``traceparent``
(the CloudEvents distributed-tracing extension) and ``clrkagent`` (the TaskAgent name).

A coalesced run reads a JSON array of such events (the CloudEvents JSON batch format).
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from clrk.errors import BadRequest
from clrk.state.values import text_problem

EVENT_ID_HEADER = "x-clrk-event-id"
# The inbox deduplicates on it, so every store must be able to index it.
MAX_EVENT_ID_LENGTH = 512
DEFAULT_SOURCE = "/clrk/ingress"
DEFAULT_TYPE = "dev.clrk.event"
CONTENT_TYPE = JSONFormat.CONTENT_TYPE
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

# W3C Trace Context, version 00: all-zero trace or span ids are invalid.
_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_FORMAT = JSONFormat()
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff), the only way a body that is valid
# UTF-8 can carry a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

__all__ = [
    "BATCH_CONTENT_TYPE",
    "CONTENT_TYPE",
    "CloudEvent",
    "batch_from_json",
    "batch_to_json",
    "event_id_for",
    "from_json",
    "new_envelope",
    "new_traceparent",
    "parse_body",
    "to_dict",
    "to_json",
    "valid_traceparent",
    "with_subject",
]


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a ``BadRequest`` saying why."""
    try:
        # Decode first: json.loads(bytes) would guess UTF-16/32 from a BOM.
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise BadRequest("body nests too deeply to be parsed") from exc
    except ValueError as exc:  # e.g. an integer past Python's 4300-digit limit
        raise BadRequest(f"body is not usable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"body must be a JSON object, not {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(body) is None:
        return data  # valid UTF-8 without such escapes holds no lone surrogate
    try:
        # JSON may escape lone surrogates ("\ud800"), which no store or reply can encode:
        # refuse them here, as a 400, not later as a 500 in the middle of storing. Only
        # bodies with surrogate escapes (emoji are pairs of them) pay for this second pass.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"body holds text that is not valid Unicode: {exc.reason}") from exc
    except RecursionError as exc:
        raise BadRequest("body nests too deeply to be stored") from exc
    return data


def event_id_for(headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """``X-Clrk-Event-Id``, else the body's ``event_id`` (Slack's), else a fresh uuid.

    ``headers`` must be case-insensitive (Starlette's and httpx's are).
    """
    header = (headers.get(EVENT_ID_HEADER) or "").strip()
    body_id = body.get("event_id")
    found = header or (body_id.strip() if isinstance(body_id, str) else "")
    if not found:
        return str(uuid.uuid4())
    problem = text_problem(found) or (
        f"more than {MAX_EVENT_ID_LENGTH} characters" if len(found) > MAX_EVENT_ID_LENGTH else None
    )
    if problem is not None:  # it is the inbox's dedupe key: every store must hold it
        raise BadRequest(f"event id {found[:80]!r} holds {problem}")
    return found


def valid_traceparent(value: str | None) -> bool:
    return bool(value) and _TRACEPARENT.match(value.strip().lower()) is not None  # type: ignore[union-attr]


def new_traceparent() -> str:
    """A fresh sampled W3C traceparent, for events that arrive without one.

    Hand-written because the OpenTelemetry API only mints ids inside an SDK tracer; the
    format is two random hex fields.
    """
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def new_envelope(
    data: dict[str, Any],
    *,
    agent: str,
    event_id: str,
    source: str = DEFAULT_SOURCE,
    type: str = DEFAULT_TYPE,
    subject: str | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """Build the envelope; a ``traceparent`` that is missing or malformed is replaced."""
    attributes: dict[str, Any] = {
        "id": event_id,
        "source": source,
        "type": type,
        "datacontenttype": "application/json",
        "traceparent": traceparent.strip().lower()
        if traceparent and valid_traceparent(traceparent)
        else new_traceparent(),
        "clrkagent": agent,
    }
    if subject is not None:
        attributes["subject"] = subject
    try:
        return CloudEvent(attributes, data)
    except BaseCloudEventException as exc:
        raise BadRequest(f"cannot build a CloudEvent: {exc}") from exc


def with_subject(event: CloudEvent, subject: str) -> CloudEvent:
    """A copy of ``event`` whose ``subject`` is ``subject`` (the partition key)."""
    attributes = dict(event.get_attributes())
    attributes["subject"] = subject
    try:
        return CloudEvent(attributes, event.get_data())
    except BaseCloudEventException as exc:
        raise BadRequest(f"cannot use {subject!r} as the event subject: {exc}") from exc


def to_json(event: CloudEvent) -> bytes:
    return _FORMAT.write(event)


def to_dict(event: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object, as an agent reads it (for JMESPath and tests)."""
    result: dict[str, Any] = json.loads(_FORMAT.write(event))
    return result


def from_json(raw: str | bytes) -> CloudEvent:
    """Parse one structured-mode event; raises ``BadRequest`` on anything malformed."""
    try:
        event = _FORMAT.read(None, raw)
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"not a CloudEvent: {exc}") from exc
    if not isinstance(event, CloudEvent):
        raise BadRequest("not a CloudEvents 1.0 event")
    return event


def batch_to_json(events: Iterable[CloudEvent]) -> bytes:
    """The JSON batch format: an array of structured events.

    The SDK has no batch writer, so the array is joined here from the SDK's own output.
    """
    return b"[" + b",".join(_FORMAT.write(event) for event in events) + b"]"


def batch_from_json(raw: str | bytes) -> list[CloudEvent]:
    try:
        items = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"batch is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise BadRequest("a CloudEvents batch must be a JSON array")
    return [from_json(json.dumps(item)) for item in items]
