"""``python -m modalrec`` (and ``torchrun -m modalrec``) runs the command line."""

import sys

from modalrec.cli import main

sys.exit(main())
