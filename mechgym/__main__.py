"""``python -m mechgym``: the :mod:`mechgym.cli` command line."""

from mechgym.cli import main

raise SystemExit(main())
