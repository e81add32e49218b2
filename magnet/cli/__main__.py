"""``python -m magnet.cli``: the ``magnet`` command."""

import sys

from magnet.cli import main

sys.exit(main())
