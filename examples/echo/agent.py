"""A trivial TaskAgent: reads its envelope (or batch) on stdin, answers with one JSON object.

It echoes what it was given plus the clrk variables of the run, which makes it handy to
check a deployment end to end: `clrk apply -f examples/echo/agent.yaml`, post an event, and
look at `clrk invocations`. It uses only the standard library, so any Python 3 runs it.
"""

import json
import os
import sys


def main() -> int:
    raw = sys.stdin.read()
    received = json.loads(raw) if raw.strip() else None
    events = received if isinstance(received, list) else [received]
    result = {
        "ok": True,
        "ids": [event["id"] for event in events if isinstance(event, dict)],
        "data": [event.get("data") for event in events if isinstance(event, dict)],
        "invocation": os.environ.get("CLRK_INVOCATION_ID"),
        "partition": os.environ.get("CLRK_PARTITION_KEY"),
        "fence": os.environ.get("CLRK_FENCE"),
    }
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
