"""``python -m unidist`` runs the ``unidist`` command."""

import sys

from unidist.cli import main

sys.exit(main())
