"""The ``clrk`` command.

Each package contributes its own sub-commands (``clrk.runtime.commands``,
``clrk.slack.commands``); this module only assembles them and adds the ones that span the
whole stack: ``demo``, ``up`` and ``slack say``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from clrk.cli_types import existing_file, positive_float
from clrk.config import data_dir
from clrk.errors import ClrkError, ConfigError

DEFAULT_MANIFEST = Path("examples/slack-thread/agent.yaml")


def _default_manifest() -> Path:
    """The example manifest, relative to a checkout of the repository."""
    if not DEFAULT_MANIFEST.exists():
        raise ConfigError(
            f"{DEFAULT_MANIFEST} not found: run from the repository root or pass --manifest"
        )
    return DEFAULT_MANIFEST


def cmd_demo(args: argparse.Namespace) -> int:
    from clrk.demo import run_demo

    home = Path(args.home) if args.home else data_dir() / "demo"
    return run_demo(home, Path(args.manifest or _default_manifest()))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    from clrk.stack import LocalStack

    home = Path(args.home) if args.home else data_dir()
    stack = LocalStack(home, Path(args.manifest or _default_manifest()))
    # A plain `kill` should stop the servers too, not leave them running.
    signal.signal(signal.SIGTERM, _interrupt)
    with stack as info:
        print("clrk is up (Ctrl-C stops it):")
        print(f"  Slack emulator   {info.emulator_url}/   (open in a browser: write in threads)")
        print(f"  Slack Web API    {info.slack_api_url}")
        print(f"  auth proxy       {info.proxy_url}/slack/events")
        print(f"  ingress          {info.ingress_url}/")
        print(f"  agent            {info.agent}   data in {info.home}")
        print('Try:  clrk slack say --channel C07ZP1MEH5S "<@U07ZN3CDV8X> hello"')
        print("      clrk invocations")
        try:
            while True:
                time.sleep(1)
                stack.check_alive()
        except KeyboardInterrupt:
            print("\nstopping ...")
    return 0


def cmd_slack_say(args: argparse.Namespace) -> int:
    from clrk.say import say

    home = Path(args.home) if args.home else data_dir()
    return say(
        home,
        channel=args.channel,
        thread_ts=args.thread,
        text=args.text,
        user=args.user,
        timeout_seconds=args.timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clrk", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the scripted Slack conversation end to end")
    demo.add_argument(
        "--home",
        help="data directory, emptied first: new, empty or an earlier demo's"
        " (default: $CLRK_HOME/demo)",
    )
    demo.add_argument(
        "--manifest",
        type=existing_file,
        help="TaskAgent manifest (default: the slack-thread example)",
    )
    demo.set_defaults(func=cmd_demo)

    up = sub.add_parser("up", help="start the local stack and leave it running")
    up.add_argument("--home", help="data directory (default: $CLRK_HOME, else ./.clrk)")
    up.add_argument(
        "--manifest",
        type=existing_file,
        help="TaskAgent manifest (default: the slack-thread example)",
    )
    up.set_defaults(func=cmd_up)

    slack = sub.add_parser("slack", help="Slack edge: emulator, auth proxy, say")
    slack_sub = slack.add_subparsers(dest="slack_command", required=True, metavar="SLACK_COMMAND")
    say = slack_sub.add_parser("say", help="send one user message to the running stack")
    say.add_argument("--channel", required=True, help="channel id, e.g. C07ZP1MEH5S")
    say.add_argument("--thread", help="root ts of the thread to reply in")
    say.add_argument("--user", default="U05HX8T2LMQ", help="the sender's user id")
    say.add_argument("--home", help="data directory of `clrk up` (default: as clrk up)")
    say.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds to wait for a reply"
    )
    say.add_argument("text")
    say.set_defaults(func=cmd_slack_say)

    from clrk.runtime import commands as runtime_commands
    from clrk.slack import commands as slack_commands

    runtime_commands.register(sub)
    slack_commands.register(slack_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else getattr(logging, os.environ.get("CLRK_LOG", "INFO"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per HTTP request drowns what clrk itself says; ask with -v to see them.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return code
    except ClrkError as exc:
        print(f"clrk: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`clrk invocations | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a folder that cannot be made, a file that cannot be read
        print(f"clrk: error: {exc}", file=sys.stderr)
        return 2
