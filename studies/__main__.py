"""``python -m studies <study> [options]``: see ``studies.cli``."""

from studies.cli import main

raise SystemExit(main())
