"""``python -m otalib`` runs the otalab CLI."""

import sys

from otalib.cli import main

sys.exit(main())
