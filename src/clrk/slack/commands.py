"""``clrk slack emulator`` and ``clrk slack proxy``: each runs one server with uvicorn.

Secrets come from the environment by default (``SLACK_SIGNING_SECRET``), so they stay out
of process listings and shell history.
"""

from __future__ import annotations

import argparse
import os

from clrk.errors import ConfigError

SIGNING_SECRET_ENV = "SLACK_SIGNING_SECRET"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PROXY_PORT = 3000
DEFAULT_EMULATOR_PORT = 3001


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``emulator`` and ``proxy`` to the ``clrk slack`` command's sub-commands."""
    emulator = subparsers.add_parser(
        "emulator", help="run the local Slack emulator (Web API, events, a page at /)"
    )
    _common(emulator, DEFAULT_EMULATOR_PORT)
    emulator.add_argument(
        "--request-url",
        default=os.environ.get("SLACK_REQUEST_URL"),
        help="where events are delivered, e.g. the auth proxy's /slack/events "
        "(default: $SLACK_REQUEST_URL; none: store messages only)",
    )
    emulator.add_argument(
        "--bot-token",
        default=os.environ.get("SLACK_BOT_TOKEN"),
        help="the bot token the Web API accepts (default: $SLACK_BOT_TOKEN, else a fixed "
        "emulator token)",
    )
    emulator.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=None,
        help="chat.postMessage posts per channel per minute before 429 (default: no limit)",
    )
    emulator.add_argument(
        "--ack-timeout", type=float, default=3.0, help="seconds Slack waits for a 2xx (3)"
    )
    emulator.add_argument("--max-retries", type=int, default=3, help="retries per event (3)")
    emulator.add_argument(
        "--retry-delays",
        default="0,60,300",
        help="seconds before retry 1,2,3 (Slack: 0,60,300)",
    )
    emulator.set_defaults(func=run_emulator)

    proxy = subparsers.add_parser(
        "proxy", help="run the auth proxy: verify Slack's signature, forward to the ingress"
    )
    _common(proxy, DEFAULT_PROXY_PORT)
    proxy.add_argument(
        "--ingress-url",
        default=os.environ.get("CLRK_INGRESS_URL", "http://127.0.0.1:8080"),
        help="the ingress base URL (default: $CLRK_INGRESS_URL or http://127.0.0.1:8080)",
    )
    proxy.add_argument("--agent", help="TaskAgent that receives every event")
    proxy.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="APP_OR_TEAM=AGENT",
        help="route an api_app_id or team_id to a TaskAgent (repeatable)",
    )
    proxy.add_argument(
        "--bot-user-id",
        default=os.environ.get("SLACK_BOT_USER_ID"),
        help="our bot's user id, to ignore its own messages (default: $SLACK_BOT_USER_ID; "
        "else read from each event's authorizations)",
    )
    proxy.add_argument(
        "--bot-id", default=os.environ.get("SLACK_BOT_ID"), help="our bot's bot id ($SLACK_BOT_ID)"
    )
    proxy.set_defaults(func=run_proxy)


def _common(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"listen address ({DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=port, help=f"listen port ({port})")
    parser.add_argument(
        "--signing-secret",
        default=None,
        help=f"Slack signing secret (default: ${SIGNING_SECRET_ENV})",
    )


def _secret(args: argparse.Namespace) -> str:
    secret = args.signing_secret or os.environ.get(SIGNING_SECRET_ENV)
    if not secret:
        raise ConfigError(f"no signing secret: set {SIGNING_SECRET_ENV} or --signing-secret")
    return secret


def parse_routes(agent: str | None, routes: list[str]) -> dict[str, str] | str:
    """``--agent`` and ``--route KEY=AGENT`` as the proxy's ``routes``."""
    table: dict[str, str] = {}
    for item in routes:
        key, sep, name = item.partition("=")
        if not (sep and key.strip() and name.strip()):
            raise ConfigError(f"--route {item!r}: expected APP_OR_TEAM=AGENT")
        table[key.strip()] = name.strip()
    if agent and not table:
        return agent
    if agent:
        table["*"] = agent
    if not table:
        raise ConfigError("name the TaskAgent: --agent NAME or --route APP_OR_TEAM=AGENT")
    return table


def _retry_delays(text: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"--retry-delays {text!r}: expected numbers like 0,60,300") from exc
    if not delays or any(d < 0 for d in delays):
        raise ConfigError(f"--retry-delays {text!r}: expected non-negative numbers")
    return delays


def run_emulator(args: argparse.Namespace) -> int:
    import uvicorn

    from clrk.slack.emulator import create_app
    from clrk.slack.emulator.app import DEFAULT_BOT_TOKEN

    app = create_app(
        signing_secret=_secret(args),
        request_url=args.request_url,
        bot_token=args.bot_token or DEFAULT_BOT_TOKEN,
        rate_limit_per_minute=args.rate_limit_per_minute,
        ack_timeout_seconds=args.ack_timeout,
        max_retries=args.max_retries,
        retry_delays_seconds=_retry_delays(args.retry_delays),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def run_proxy(args: argparse.Namespace) -> int:
    import uvicorn

    from clrk.slack.proxy import create_app

    app = create_app(
        signing_secret=_secret(args),
        ingress_url=args.ingress_url,
        routes=parse_routes(args.agent, args.route),
        bot_user_id=args.bot_user_id,
        bot_id=args.bot_id,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
