"""`python -m tasuki ...` runs the `tasuki` command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
