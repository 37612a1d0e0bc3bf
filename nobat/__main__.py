"""`python -m nobat` is the `nobat` command."""

import sys

from nobat.cli import main

sys.exit(main())
