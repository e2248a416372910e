"""The runtime's ``clrk`` commands: apply, agents, delete, invocations, ingress, dispatcher.

``register(subparsers)`` adds them to the top-level parser; each sets ``func`` to a handler
taking the parsed arguments and returning the exit code. Every command works on
``--db URL`` (default: :func:`clrk.config.runtime_url`, SQLite in the data dir).
``python -m clrk.runtime.commands ...`` runs them without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clrk import config
from clrk.cli_types import existing_file, non_negative_int, port, positive_float, positive_int
from clrk.errors import ClrkError, ManifestError

Handler = Callable[[argparse.Namespace], int]
# A safety net for columns without their own limit: no cell may push the rest off screen.
MAX_CELL_WIDTH = 80


def register(subparsers: Any) -> None:
    """Add the runtime commands to an ``argparse`` subparsers object."""

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=help)
        parser.add_argument(
            "--db",
            metavar="URL",
            help="runtime database (default: $CLRK_RUNTIME_URL or SQLite in the data dir)",
        )
        parser.add_argument(
            "--home",
            metavar="DIR",
            help="data dir of a `clrk up --home DIR` stack (default: $CLRK_HOME, else ./.clrk)",
        )
        parser.set_defaults(func=_guarded(handler))
        return parser

    apply = command(
        "apply", _apply, "validate a TaskAgent manifest and register it (re-applying replaces)"
    )
    apply.add_argument(
        "-f", "--filename", required=True, type=existing_file, metavar="FILE", help="manifest YAML"
    )
    command("agents", _agents, "list registered TaskAgents")
    delete = command(
        "delete", _delete, "unregister a TaskAgent (its waiting events are dead-lettered)"
    )
    delete.add_argument("name")
    invocations = command("invocations", _invocations, "list recent invocations, newest first")
    invocations.add_argument("--agent", help="only this agent")
    invocations.add_argument("--limit", type=positive_int, default=20, help="rows (20)")
    invocations.add_argument("--json", action="store_true", help="one JSON object per line")
    ingress = command("ingress", _ingress, "serve the HTTP ingress")
    ingress.add_argument("--host", default="127.0.0.1")
    ingress.add_argument("--port", type=port, default=8080)
    dispatcher = command("dispatcher", _dispatcher, "run agents for inbox events")
    dispatcher.add_argument("--until-idle", action="store_true", help="drain the inbox and exit")
    dispatcher.add_argument("--worker-id")
    dispatcher.add_argument("--poll-interval", type=positive_float, default=0.05, metavar="SECONDS")
    dispatcher.add_argument("--lease-seconds", type=positive_float, default=30.0)
    dispatcher.add_argument(
        "--nice",
        # Only lowering: raising priority needs root and fails late, in os.nice.
        type=non_negative_int,
        default=0,
        metavar="N",
        help="lower the CPU priority of the dispatcher and its runs (faster acks on small hosts)",
    )


def _guarded(handler: Handler) -> Handler:
    """Print clrk errors as one line on stderr instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ManifestError as exc:
            # One line per problem, each naming its field, so all of them can be fixed at once.
            for problem in getattr(exc, "problems", (exc,)):
                print(f"error: invalid manifest: {problem}", file=sys.stderr)
            return 2
        except ClrkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _url(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    if args.home:
        return f"sqlite:///{Path(args.home).resolve() / config.RUNTIME_DB}"
    return config.runtime_url()


def _apply(args: argparse.Namespace) -> int:
    from clrk.manifest import load_manifest
    from clrk.runtime.inbox import Inbox

    agent = load_manifest(args.filename)
    with Inbox.open(_url(args)) as inbox:
        inbox.apply(agent)
    print(f"taskagent/{agent.name} applied")
    return 0


def _agents(args: argparse.Namespace) -> int:
    from clrk.runtime.inbox import Inbox

    with Inbox.open(_url(args)) as inbox:
        rows = inbox.agents()
    table = [("NAME", "MAX", "ONBUSY", "MODE", "KEY", "COMMAND", "APPLIED")]
    for agent, applied_at in rows:
        spec = agent.spec
        table.append(
            (
                agent.name,
                str(spec.max_concurrent),
                spec.on_busy,
                spec.mode,
                _cut(spec.partition_key, 30),
                _cut(" ".join(spec.template.spec.command), 40),
                _when(applied_at),
            )
        )
    _print_table(table)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from clrk.runtime.inbox import Inbox

    with Inbox.open(_url(args)) as inbox:
        dropped = inbox.delete(args.name)
    suffix = f" ({_count(dropped, 'waiting event')} dead-lettered)" if dropped else ""
    print(f"taskagent/{args.name} deleted{suffix}")
    return 0


def _invocations(args: argparse.Namespace) -> int:
    from clrk.runtime.inbox import Inbox

    with Inbox.open(_url(args)) as inbox:
        rows = inbox.invocations(args.agent, args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = [("ID", "AGENT", "KEY", "STATUS", "TRIES", "DURATION", "EXIT", "STDERR / REASON")]
    for row in rows:
        duration = ""
        if row["started_at"] and row["finished_at"]:
            duration = f"{(row['finished_at'] - row['started_at']) * 1000:.0f}ms"
        tail = (row["stderr_tail"] or "").strip().splitlines()[-1:]
        note = row["reason"] or ""
        if row["coalesced_into"]:
            note = f"coalesced into {row['coalesced_into']}"
        if tail:
            note = f"{note} | {tail[0]}" if note else tail[0]
        table.append(
            (
                row["id"],
                row["agent"],
                _cut(row["partition_key"], 24),
                row["status"],
                str(row["attempts"]),
                duration,
                "" if row["exit_code"] is None else str(row["exit_code"]),
                _cut(note, 70),
            )
        )
    _print_table(table)
    return 0


def _ingress(args: argparse.Namespace) -> int:
    import uvicorn

    from clrk.runtime.ingress import create_app

    _logging()
    uvicorn.run(create_app(_url(args)), host=args.host, port=args.port, log_level="warning")
    return 0


def _dispatcher(args: argparse.Namespace) -> int:
    from clrk.runtime.dispatcher import Dispatcher

    _logging()
    if args.nice:
        os.nice(args.nice)  # inherited by every sandbox it starts
    dispatcher = Dispatcher(
        _url(args),
        worker_id=args.worker_id,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, dispatcher.stop)
        await dispatcher.run(until_idle=args.until_idle)

    asyncio.run(main())
    return 0


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Aligned columns; every cell is one line (a folded YAML value would break the rows)."""
    rows = [tuple(_cut(cell, MAX_CELL_WIDTH) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _cut(text: str, width: int) -> str:
    """``text`` on one line (whitespace runs collapsed) and at most ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _count(n: int, noun: str) -> str:
    """``1 waiting event``, ``2 waiting events``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clrk", description="clrk runtime commands")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
