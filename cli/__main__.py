"""``python -m cli VERB ...``: the ``hidden-rules`` command line."""

import sys

from cli import main

sys.exit(main())
