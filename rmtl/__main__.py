"""``python -m rmtl``: the command line (see rmtl.lab.cli)."""

from .lab.cli import main

raise SystemExit(main())
