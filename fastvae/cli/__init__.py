"""The command line: ``fastvae train | sample | eval | ...``."""
from .main import main  # noqa: F401  (the console script fastvae.cli:main)
