"""``python -m clrk``: the same as the ``clrk`` command."""

from clrk.cli import main

raise SystemExit(main())
