"""The auth proxy, wired to a small ingress stand-in (in process and over real HTTP)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import slack_helpers as helpers
from slack_helpers import (
    FIXTURE_SECRET,
    FIXTURE_TIMESTAMP,
    FixedClock,
    IngressStandIn,
    sign,
)

from clrk.slack.proxy import create_app
from support import SLACK_FIXTURES, serve

AGENT = "slack-thread-agent"
FORWARDED = {
    "message_channel_top_level.json",
    "app_mention_top_level.json",
    "message_thread_reply.json",
    "app_mention_in_thread.json",
    "message_changed_user_edit.json",
    "message_deleted.json",
    "message_thread_broadcast.json",
    "message_file_share.json",
    "message_im.json",
    "assistant_thread_started.json",
    "wire_app_mention_top_level.min.json",
}


@pytest.fixture(autouse=True)
def _fixtures_present(slack_fixtures: Path) -> None:
    """Most tests here sign the shared Slack fixtures: without them, skip with the reason
    (fail under CI) instead of a FileNotFoundError in each test."""


def _names() -> list[str]:
    path = SLACK_FIXTURES / "signatures.json"
    return sorted(json.loads(path.read_text())["files"]) if path.is_file() else []


def _proxy(ingress: IngressStandIn, **kwargs: Any) -> httpx.AsyncClient:
    options: dict[str, Any] = dict(
        signing_secret=FIXTURE_SECRET,
        ingress_url="http://ingress",
        routes=AGENT,
        clock=FixedClock(),
        transport=httpx.ASGITransport(app=ingress.app()),
    )
    options.update(kwargs)
    app = create_app(**options)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")
    client.metrics = app.state.metrics  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize("name", _names())
async def test_known_answer_signatures(slack_fixtures: Path, name: str) -> None:
    signatures = json.loads((slack_fixtures / "signatures.json").read_text())
    body = (slack_fixtures / name).read_bytes()
    headers = {
        "X-Slack-Request-Timestamp": signatures["x_slack_request_timestamp"],
        "X-Slack-Signature": signatures["files"][name],
        "Content-Type": "application/json",
    }
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        answer = await proxy.post("/", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    if name == "url_verification.json":
        assert answer.json() == {"challenge": json.loads(body)["challenge"]}
    if name not in FORWARDED:
        assert ingress.requests == []
        return
    [forwarded] = ingress.requests
    assert forwarded["body"] == body  # byte for byte, escapes and whitespace included
    assert forwarded["headers"]["x-clrk-taskagent"] == AGENT
    assert forwarded["headers"]["x-clrk-event-id"].startswith("slack:T07ZK4QW9PL:")
    assert forwarded["headers"]["content-type"] == "application/json"
    assert forwarded["headers"]["traceparent"].startswith("00-")
    assert "x-slack-signature" not in forwarded["headers"]


def _signed_fixture(name: str = "app_mention_top_level.json") -> tuple[bytes, dict[str, str]]:
    body = (SLACK_FIXTURES / name).read_bytes()
    return body, sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP)


async def test_tampered_body_is_a_signature_mismatch() -> None:
    body, headers = _signed_fixture()
    tampered = body.replace(b"dig in", b"dig out")
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        answer = await proxy.post("/", content=tampered, headers=headers)
        assert answer.status_code == 401
        assert proxy.metrics["rejected_bad_signature"] == 1
        assert proxy.metrics["rejected_stale_timestamp"] == 0
    assert ingress.requests == []


@pytest.mark.parametrize(
    ("offset", "metric"),
    [(-301, "rejected_stale_timestamp"), (301, "rejected_future_timestamp")],
)
async def test_stale_and_future_timestamps_are_told_apart(
    offset: int, metric: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = (SLACK_FIXTURES / "app_mention_top_level.json").read_bytes()
    headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP + offset)  # correctly signed
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        answer = await proxy.post("/", content=body, headers=headers)
        assert answer.status_code == 401
        assert proxy.metrics[metric] == 1
        assert proxy.metrics["rejected_bad_signature"] == 0
        metrics = (await proxy.get("/metrics")).json()
    assert metrics[metric] == 1
    assert any(getattr(r, "action", None) == metric for r in caplog.records)
    assert ingress.requests == []


async def test_inside_the_window_is_accepted() -> None:
    body = (SLACK_FIXTURES / "app_mention_top_level.json").read_bytes()
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        for offset in (-299, 299):
            headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP + offset)
            assert (await proxy.post("/", content=body, headers=headers)).status_code == 200


@pytest.mark.parametrize("drop", ["X-Slack-Request-Timestamp", "X-Slack-Signature"])
async def test_missing_headers(drop: str) -> None:
    body, headers = _signed_fixture()
    del headers[drop]
    async with _proxy(IngressStandIn()) as proxy:
        answer = await proxy.post("/", content=body, headers=headers)
        assert answer.status_code == 401
        assert proxy.metrics["rejected_missing_headers"] == 1


async def test_non_integer_timestamp() -> None:
    body, headers = _signed_fixture()
    headers["X-Slack-Request-Timestamp"] = "yesterday"
    async with _proxy(IngressStandIn()) as proxy:
        assert (await proxy.post("/", content=body, headers=headers)).status_code == 401
        assert proxy.metrics["rejected_bad_timestamp"] == 1


@pytest.mark.parametrize("body", [b"token=abc&team_id=T1", b"[1, 2]", b"{not json"])
async def test_signed_but_not_a_json_object(body: bytes) -> None:
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP)
        assert (await proxy.post("/", content=body, headers=headers)).status_code == 400
        assert proxy.metrics["rejected_bad_body"] == 1
    assert ingress.requests == []


async def test_bytes_that_are_not_utf8_cannot_carry_a_signature() -> None:
    headers = {"X-Slack-Request-Timestamp": str(FIXTURE_TIMESTAMP), "X-Slack-Signature": "v0=00"}
    async with _proxy(IngressStandIn()) as proxy:
        answer = await proxy.post("/", content=b"\xff\xfe{}", headers=headers)
        assert answer.status_code == 401
        assert proxy.metrics["rejected_bad_signature"] == 1


async def test_a_signature_that_is_not_ascii_is_a_mismatch_not_a_500() -> None:
    """Bug: slack_sdk's compare_digest raised TypeError on a non-ASCII signature header."""
    body, headers = _signed_fixture()
    headers["X-Slack-Signature"] = "v0=\u00fc"
    encoded = {k: v.encode("utf-8") for k, v in headers.items()}
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        answer = await proxy.post("/", content=body, headers=encoded)
        assert answer.status_code == 401
        assert proxy.metrics["rejected_bad_signature"] == 1
    assert ingress.requests == []


def _signed_variant(change: Any) -> Any:
    """A fixture's body with ``change`` made, built when the test runs (fixtures may be
    missing at collection)."""

    def build() -> bytes:
        event = json.loads((SLACK_FIXTURES / "message_thread_reply.json").read_text())
        change(event)
        return json.dumps(event).encode()

    return build


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # Bugs (found by a helper): each was a 500 from the proxy, for a signed body.
        (_signed_variant(lambda e: e["event"].update(channel="C\ud800")), 400),
        (_signed_variant(lambda e: e["event"].update(channel="C\u0000X")), 400),
        (lambda: b'{"type": "event_callback", "a": ' + b"[" * 60_000 + b"]" * 60_000 + b"}", 400),
        (
            _signed_variant(
                lambda e: e["event"].update(subtype="message_changed", message="not an object")
            ),
            200,  # understood, and ignored: nothing to answer
        ),
        (
            _signed_variant(
                lambda e: e["event"].update(type="assistant_thread_started", assistant_thread=[1])
            ),
            200,
        ),
    ],
)
async def test_signed_but_strange_bodies_are_refused_or_ignored_never_a_500(
    body: Any, status: int
) -> None:
    body = body()
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP)
        answer = await proxy.post("/", content=body, headers=headers)
        assert answer.status_code == status
        if status == 400:
            assert proxy.metrics["rejected_bad_body"] == 1
    assert ingress.requests == []


async def test_oversized_body() -> None:
    body = json.dumps({"type": "event_callback", "pad": "x" * 5000}).encode()
    ingress = IngressStandIn()
    async with _proxy(ingress, max_body_bytes=4096) as proxy:
        answer = await proxy.post(
            "/", content=body, headers=sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP)
        )
        assert answer.status_code == 413
        assert proxy.metrics["rejected_too_large"] == 1

        async def chunks():  # no Content-Length: the limit holds while streaming too
            for _ in range(5):
                yield b"x" * 1000

        headers = sign(b"", FIXTURE_SECRET, FIXTURE_TIMESTAMP)
        answer = await proxy.post("/", content=chunks(), headers=headers)
        assert answer.status_code == 413
    assert ingress.requests == []


async def test_one_event_delivered_four_times_is_one_stored_event() -> None:
    body = (SLACK_FIXTURES / "message_thread_reply.json").read_bytes()
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        for retry in range(4):
            headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP + retry)  # re-signed
            if retry:
                headers["X-Slack-Retry-Num"] = str(retry)
                headers["X-Slack-Retry-Reason"] = "http_timeout"
            assert (await proxy.post("/", content=body, headers=headers)).status_code == 200
        assert proxy.metrics["retries_received"] == 3
        assert proxy.metrics["forwarded"] == 4
    ids = {r["headers"]["x-clrk-event-id"] for r in ingress.requests}
    assert ids == {"slack:T07ZK4QW9PL:C07ZP1MEH5S:1784021601.771349"}
    assert len(ingress.stored) == 1


async def test_a_mention_delivered_twice_is_one_stored_event() -> None:
    mention = json.loads((SLACK_FIXTURES / "app_mention_top_level.json").read_bytes())
    as_message = copy.deepcopy(mention)
    as_message["event"]["type"] = "message"
    as_message["event"]["channel_type"] = "channel"
    as_message["event_id"] = "Ev07ZQ9B4XYZ"
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        for payload in (mention, as_message):
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers = sign(body, FIXTURE_SECRET, FIXTURE_TIMESTAMP)
            assert (await proxy.post("/", content=body, headers=headers)).status_code == 200
    assert len(ingress.requests) == 2
    assert len(ingress.stored) == 1


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_no_2xx_to_slack_unless_the_ingress_stored_it(status: int) -> None:
    body, headers = _signed_fixture()
    ingress = IngressStandIn(status=status)
    async with _proxy(ingress) as proxy:
        answer = await proxy.post("/", content=body, headers=headers)
        assert answer.status_code == 503
        assert proxy.metrics["ingress_refused"] == 1
        assert proxy.metrics["forwarded"] == 0


def test_slow_ingress_answers_503_before_slack_gives_up() -> None:
    ingress = IngressStandIn(delay_seconds=2.0)
    with serve(ingress.app()) as ingress_url:
        app = create_app(
            signing_secret="s3cret",
            ingress_url=ingress_url,
            routes=AGENT,
            forward_timeout_seconds=0.3,
        )
        with serve(app) as proxy_url:
            body = (SLACK_FIXTURES / "app_mention_top_level.json").read_bytes()
            headers = helpers.sign(body, "s3cret")
            assert httpx.post(proxy_url, content=body, headers=headers).status_code == 503
            assert httpx.get(proxy_url + "/metrics").json()["ingress_unavailable"] == 1


async def test_routes_by_app_or_team_and_unrouted() -> None:
    body, headers = _signed_fixture()
    for routes, expect in [
        ({"A07ZN2BQ5RT": "by-app", "T07ZK4QW9PL": "by-team"}, "by-app"),
        ({"T07ZK4QW9PL": "by-team"}, "by-team"),
        ({"*": "fallback"}, "fallback"),
    ]:
        ingress = IngressStandIn()
        async with _proxy(ingress, routes=routes) as proxy:
            assert (await proxy.post("/", content=body, headers=headers)).status_code == 200
        assert ingress.requests[0]["headers"]["x-clrk-taskagent"] == expect
    ingress = IngressStandIn()
    async with _proxy(ingress, routes={"AOTHER": "x"}) as proxy:
        assert (await proxy.post("/", content=body, headers=headers)).status_code == 404
        assert proxy.metrics["unrouted"] == 1
    assert ingress.requests == []


async def test_traceparent_is_passed_on() -> None:
    body, headers = _signed_fixture()
    headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ingress = IngressStandIn()
    async with _proxy(ingress) as proxy:
        await proxy.post("/", content=body, headers=headers)
    assert ingress.requests[0]["headers"]["traceparent"] == headers["traceparent"]


def test_over_real_http_with_the_real_clock() -> None:
    """Proxy and ingress as real servers; the fixture re-signed with the current time."""
    ingress = IngressStandIn()
    with serve(ingress.app()) as ingress_url:
        app = create_app(signing_secret="s3cret", ingress_url=ingress_url, routes=AGENT)
        with serve(app) as proxy_url:
            body = (SLACK_FIXTURES / "wire_app_mention_top_level.min.json").read_bytes()
            answer = httpx.post(
                proxy_url + "/slack/events", content=body, headers=helpers.sign(body, "s3cret")
            )
            assert answer.status_code == 200
            assert httpx.get(proxy_url + "/healthz").json() == {"ok": True}
            assert httpx.get(proxy_url + "/metrics").json()["forwarded"] == 1
            stale = helpers.sign(body, "s3cret", timestamp=1)
            assert httpx.post(proxy_url + "/", content=body, headers=stale).status_code == 401
    assert [r["body"] for r in ingress.requests] == [body]


def test_ingress_down_answers_503() -> None:
    ingress = IngressStandIn()
    with serve(ingress.app()) as ingress_url:
        pass  # stopped: nothing listens there any more
    app = create_app(signing_secret="s3cret", ingress_url=ingress_url, routes=AGENT)
    with serve(app) as proxy_url:
        body = (SLACK_FIXTURES / "app_mention_top_level.json").read_bytes()
        answer = httpx.post(proxy_url + "/", content=body, headers=helpers.sign(body, "s3cret"))
        assert answer.status_code == 503
        assert httpx.get(proxy_url + "/metrics").json()["ingress_unavailable"] == 1


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="signing_secret"):
        create_app(signing_secret="", ingress_url="http://x", routes=AGENT)
    with pytest.raises(ValueError, match="routes"):
        create_app(signing_secret="s", ingress_url="http://x", routes={})
