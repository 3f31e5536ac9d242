"""``python -m fastvae ...`` runs the command line (see :mod:`fastvae.cli`)."""
import sys

from .cli import main

sys.exit(main())
