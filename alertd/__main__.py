"""`python -m alertd` runs the command-line interface."""

import sys

from alertd.cli import main

sys.exit(main())
