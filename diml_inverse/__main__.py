"""``python -m diml_inverse`` runs the ``diml`` command line."""

from diml_inverse.cli import main

raise SystemExit(main())
