"""The dispatcher loop: claim events from the inbox, run each in a fresh sandbox, record.

The inbox decides *what* may run (one turn per partition, ``maxConcurrent`` per agent,
leases and fences); this class only owns loop state: the runs in flight on this worker,
their cancel switches, and one side task that renews their leases. Database calls run in
threads and each run is its own asyncio task, so a slow agent never stalls the others,
and the poll stays cheap enough to run every ~50 ms.

Outcomes: exit 0 with one JSON object on stdout succeeds; anything else is retried with
exponential backoff (``backoffSeconds * 2**(attempt-1)``), then dead-lettered with the
reason kept. An interrupted run (``onBusy: interrupt``) is killed and its event queued
again, to run at once together with the newer events of its partition. A worker that lost
its lease has its outcome refused by the fence and discards it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clrk import config
from clrk.errors import ClrkError, Conflict, SandboxError, StoreError
from clrk.runtime.inbox import Claim, Inbox
from clrk.runtime.sandbox import RunResult, RunSpec, Sandbox, choose_sandbox

logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 0.05
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_MAX_RUNS = 32
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0
# Claim even when nothing new arrived, for retries whose backoff ran out and partitions
# freed by other workers.
RECLAIM_SECONDS = 0.5
STDERR_KEEP_CHARS = 2000
STORE_DOWN_SLEEP_SECONDS = 1.0
INTERRUPTED = "interrupted by a newer event on its partition; runs again with it"


@dataclass
class _Run:
    claim: Claim
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    why_cancelled: str = ""


class Dispatcher:
    """Runs the agents of one inbox. ``await run()``; ``stop()`` from anywhere, any number
    of times; ``run(until_idle=True)`` drains the inbox and returns (for tests and batch use).
    """

    def __init__(
        self,
        db_url: str,
        *,
        worker_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_runs: int = DEFAULT_MAX_RUNS,
        sandbox: Sandbox | None = None,
        data_dir: Path | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.db_url = db_url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.max_runs = max_runs
        self.sandbox = sandbox
        self.data_dir = data_dir
        self.stop_timeout = stop_timeout
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Stop claiming, let runs in flight finish; safe from any thread, idempotent."""
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, *, until_idle: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        sandbox = self.sandbox or choose_sandbox()
        self.sandbox = sandbox
        problem = sandbox.python_problem()
        if problem:
            logger.warning(
                "agents whose command is `python` will fail: %s",
                problem,
                extra={"action": "sandbox_python_unreachable", "worker": self.worker_id},
            )
        inbox = await asyncio.to_thread(Inbox.open, self.db_url)
        renewer = asyncio.create_task(self._renew_forever(inbox))
        logger.info(
            "dispatcher %s started (sandbox: %s)",
            self.worker_id,
            sandbox.kind,
            extra={"action": "dispatcher_start", "worker": self.worker_id},
        )
        try:
            await self._loop_until_done(inbox, sandbox, until_idle, renewer)
        except asyncio.CancelledError:
            self.stop_timeout = 0  # cancelled, not stopped: take the runs down now
            raise
        finally:
            renewer.cancel()
            await self._finish_runs()
            await asyncio.gather(renewer, return_exceptions=True)
            await asyncio.to_thread(inbox.close)

    async def _loop_until_done(
        self, inbox: Inbox, sandbox: Sandbox, until_idle: bool, renewer: asyncio.Task[None]
    ) -> None:
        assert self._wake is not None
        seen_seq = -1
        last_claim = 0.0
        while not self._stopping:
            if renewer.done():
                renewer.result()  # a failing side task stops the loop with its error
            try:
                last_seq, cancels = await asyncio.to_thread(inbox.poll, self.worker_id)
                if cancels:
                    await self._cancel_requested(inbox)
                woken = self._wake.is_set()
                self._wake.clear()
                now = time.monotonic()
                if last_seq != seen_seq or woken or now - last_claim >= RECLAIM_SECONDS:
                    seen_seq, last_claim = last_seq, now
                    await self._claim_all(inbox, sandbox)
                if until_idle and not self._runs and await asyncio.to_thread(inbox.pending) == 0:
                    return
            except StoreError as exc:
                logger.warning(
                    "inbox unavailable, retrying: %s",
                    exc,
                    extra={"action": "inbox_unavailable", "worker": self.worker_id},
                )
                await asyncio.sleep(STORE_DOWN_SLEEP_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def _claim_all(self, inbox: Inbox, sandbox: Sandbox) -> None:
        while len(self._runs) < self.max_runs and not self._stopping:
            claim = await asyncio.to_thread(inbox.claim, self.worker_id, self.lease_seconds)
            if claim is None:
                return
            run = _Run(claim)
            self._runs[claim.id] = run
            task = asyncio.create_task(self._execute(inbox, sandbox, run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _cancel_requested(self, inbox: Inbox) -> None:
        for invocation_id in await asyncio.to_thread(inbox.cancel_requests, self.worker_id):
            run = self._runs.get(invocation_id)
            if run is not None and not run.cancel.is_set():
                run.why_cancelled = INTERRUPTED
                run.cancel.set()

    async def _renew_forever(self, inbox: Inbox) -> None:
        """Renew every lease of this worker at a third of its length; drop lost ones."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            for run in list(self._runs.values()):
                try:
                    kept = await asyncio.to_thread(
                        inbox.renew, run.claim, self.worker_id, self.lease_seconds
                    )
                except StoreError as exc:
                    logger.warning("lease renewal failed: %s", exc, extra=_log(run.claim))
                    continue
                if not kept and not run.cancel.is_set():
                    run.why_cancelled = "lease lost"
                    run.cancel.set()

    async def _finish_runs(self) -> None:
        """On stop: let runs in flight end for ``stop_timeout``, then kill the rest.

        A killed run keeps its lease until it expires; then another worker retries it.
        """
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.stop_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _execute(self, inbox: Inbox, sandbox: Sandbox, run: _Run) -> None:
        claim = run.claim
        logger.info("run %s attempt %d", claim.id, claim.attempt, extra=_log(claim, "run_start"))
        try:
            try:
                spec = self._spec(claim, sandbox)
                result = await sandbox.run(spec, run.cancel)
            except SandboxError as exc:
                # Not the agent's fault and not fixed by retrying: dead-letter at once.
                await self._record(inbox, claim, "finish", "dead", reason=f"sandbox: {exc}")
                return
            await self._settle(inbox, run, result)
        finally:
            self._runs.pop(claim.id, None)
            if self._wake is not None:
                self._wake.set()

    def _spec(self, claim: Claim, sandbox: Sandbox) -> RunSpec:
        agent = claim.agent
        first = json.loads(claim.envelopes[0])
        env = {
            **agent.env,
            "CLRK_INVOCATION_ID": claim.id,
            "CLRK_PARTITION_KEY": claim.partition_key,
            "CLRK_FENCE": str(claim.fence),
            "TRACEPARENT": str(first.get("traceparent", "")),
        }
        data_dir = None
        if agent.spec.state is not None:
            base = self.data_dir or config.data_dir()
            data_dir = str(sandbox.prepare_data_dir(base / "agents" / agent.name))
            env["CLRK_DATA_DIR"] = data_dir
        if claim.batched:
            stdin = ("[" + ",".join(claim.envelopes) + "]").encode()  # CloudEvents batch
        else:
            stdin = claim.envelopes[0].encode()
        container = agent.spec.template.spec
        return RunSpec(
            command=list(container.command),
            env=env,
            stdin=stdin,
            timeout_seconds=agent.spec.timeout_seconds,
            network=agent.spec.network,
            working_dir=container.working_dir,
            data_dir=data_dir,
        )

    async def _settle(self, inbox: Inbox, run: _Run, result: RunResult) -> None:
        claim = run.claim
        stderr = result.stderr_tail.decode("utf-8", "replace")[-STDERR_KEEP_CHARS:]
        common: dict[str, Any] = {"exit_code": result.exit_code, "stderr_tail": stderr}
        if result.cancelled and run.why_cancelled == INTERRUPTED:
            # Its uncommitted work is gone; its event runs again at once, with the newer ones.
            await self._record(inbox, claim, "retry", 0.0, reason=INTERRUPTED, **common)
            return
        if result.cancelled:
            await self._record(
                inbox, claim, "finish", "cancelled", reason=run.why_cancelled, **common
            )
            return
        failure, output = _judge(result, claim.agent.spec.timeout_seconds)
        if failure is None:
            await self._record(inbox, claim, "finish", "succeeded", result=output, **common)
            return
        retries = claim.agent.spec.retries
        if claim.attempt <= retries.max_retries:
            delay = retries.backoff_seconds * 2 ** (claim.attempt - 1)
            await self._record(inbox, claim, "retry", delay, reason=failure, **common)
        else:
            reason = f"{failure} (after {claim.attempt} attempts)"
            await self._record(inbox, claim, "finish", "dead", reason=reason, **common)

    async def _record(self, inbox: Inbox, claim: Claim, how: str, *args: Any, **kw: Any) -> None:
        """Write the outcome; a fenced-out worker logs and discards it."""
        action = inbox.finish if how == "finish" else inbox.retry
        try:
            await asyncio.shield(asyncio.to_thread(action, claim, *args, **kw))
        except Conflict as exc:
            logger.warning("outcome discarded: %s", exc, extra=_log(claim, "fenced_out"))
            return
        except ClrkError as exc:
            # The lease will expire and another attempt will run: nothing is lost.
            logger.error("cannot record outcome: %s", exc, extra=_log(claim, "record_failed"))
            return
        what = args[0] if how == "finish" else f"retry in {args[0]:.1f}s"
        logger.info("run %s: %s", claim.id, what, extra=_log(claim, "run_end"))


def _judge(result: RunResult, timeout_seconds: float) -> tuple[str | None, str | None]:
    """(failure reason or None, the stdout JSON text when it is one object)."""
    if result.timed_out:
        return f"timed out after {timeout_seconds:g}s", None
    if result.exit_code != 0:
        last = result.stderr_tail.decode("utf-8", "replace").strip().splitlines()[-1:]
        detail = f": {last[0][:200]}" if last else ""
        return f"exit code {result.exit_code}{detail}", None
    if result.stdout_truncated:
        return "stdout larger than the limit", None
    try:
        parsed = json.loads(result.stdout)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"stdout is not JSON: {exc}", None
    if not isinstance(parsed, dict):
        return f"stdout must be one JSON object, got {type(parsed).__name__}", None
    return None, json.dumps(parsed)


def _log(claim: Claim, action: str = "run") -> dict[str, Any]:
    return {
        "action": action,
        "invocation": claim.id,
        "agent": claim.agent.name,
        "partition_key": claim.partition_key,
        "fence": claim.fence,
    }
