"""clrk.runtime: ingress, durable inbox, per-partition dispatcher, sandbox.

Import what you use from here; ``clrk.runtime.commands.register`` adds the CLI commands.
"""

from clrk.runtime.dispatcher import Dispatcher
from clrk.runtime.inbox import Claim, Enqueued, Inbox
from clrk.runtime.ingress import create_app
from clrk.runtime.partition import partition_key
from clrk.runtime.sandbox import RunResult, RunSpec, Sandbox, choose_sandbox

__all__ = [
    "Claim",
    "Dispatcher",
    "Enqueued",
    "Inbox",
    "RunResult",
    "RunSpec",
    "Sandbox",
    "choose_sandbox",
    "create_app",
    "partition_key",
]
