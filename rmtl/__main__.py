"""``python -m rmtl``: the command line (see rmtl.cli)."""
from .cli import main

raise SystemExit(main())
