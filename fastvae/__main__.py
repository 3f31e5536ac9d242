"""``python -m fastvae ...`` runs the command line (see :mod:`fastvae.cli.main`)."""
import sys

from .cli.main import main

sys.exit(main())
