"""The CloudEvents envelope: ids, subject, tracing, batches, and malformed input."""

from __future__ import annotations

import json

import httpx
import pytest

from clrk import envelope
from clrk.errors import BadRequest


def test_event_id_prefers_header_then_body_then_uuid() -> None:
    assert envelope.event_id_for({"x-clrk-event-id": "h1"}, {"event_id": "b1"}) == "h1"
    assert envelope.event_id_for({}, {"event_id": "b1"}) == "b1"
    generated = envelope.event_id_for({}, {"event_id": 5})
    assert generated and generated != envelope.event_id_for({}, {})


def test_envelope_is_structured_cloudevent_with_extensions() -> None:
    event = envelope.new_envelope(
        {"text": "hi"}, agent="echo", event_id="e1", subject="T1", traceparent=None
    )
    doc = json.loads(envelope.to_json(event))
    assert doc["specversion"] == "1.0"
    assert doc["id"] == "e1" and doc["subject"] == "T1" and doc["clrkagent"] == "echo"
    assert doc["data"] == {"text": "hi"}
    assert envelope.valid_traceparent(doc["traceparent"])
    parsed = envelope.from_json(json.dumps(doc))
    assert parsed.get_id() == "e1" and parsed.get_data() == {"text": "hi"}


def test_valid_traceparent_is_kept_and_bad_one_replaced() -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    kept = envelope.new_envelope({}, agent="a", event_id="1", traceparent=given)
    assert kept.get_extension("traceparent") == given
    replaced = envelope.new_envelope({}, agent="a", event_id="1", traceparent="00-zz")
    assert replaced.get_extension("traceparent") != "00-zz"
    assert envelope.valid_traceparent(replaced.get_extension("traceparent"))


def test_with_subject_copies() -> None:
    event = envelope.new_envelope({"a": 1}, agent="a", event_id="1")
    keyed = envelope.with_subject(event, "k")
    assert keyed.get_subject() == "k" and event.get_subject() is None
    assert keyed.get_id() == "1"


def test_batch_round_trip() -> None:
    events = [envelope.new_envelope({"n": n}, agent="a", event_id=str(n)) for n in range(3)]
    raw = envelope.batch_to_json(events)
    assert isinstance(json.loads(raw), list)
    back = envelope.batch_from_json(raw)
    assert [event.get_data() for event in back] == [{"n": 0}, {"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "UTF-8"),
        (b"", "not JSON"),
        # Bugs: these were 500s from deep inside the ingress, not 400s.
        (b'{"thread": "bad\\ud800"}', "not valid Unicode"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
        (b'{"n": ' + b"1" * 5000 + b"}", "not usable JSON"),
    ],
)
def test_parse_body_rejects_malformed(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        envelope.parse_body(body)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"event_id": "Ev\u0000nul"}),
        ({}, {"event_id": "half \ud800"}),
        ({"X-Clrk-Event-Id": "x" * 513}, {}),
        ({}, {"event_id": "E" * 600}),
    ],
)
def test_event_ids_no_store_can_keep_are_refused(headers: dict, body: dict) -> None:
    """Bug: a NUL in the event id was stored by SQLite and a 503 on Postgres (a poison
    message the sender retried forever); now a 400, on both."""
    with pytest.raises(BadRequest, match="event id"):
        envelope.event_id_for(httpx.Headers(headers), body)


def test_from_json_rejects_non_cloudevents() -> None:
    with pytest.raises(BadRequest):
        envelope.from_json(b'{"hello": 1}')
    with pytest.raises(BadRequest):
        envelope.batch_from_json(b'{"id": "x"}')
