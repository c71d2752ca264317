"""``python -m paper_figs.cli VERB ...``: the ``hidden-rules`` command line (``cli``), kept under this name
for the tests, docs and ``accelerate launch -m paper_figs.cli``. Every verb is registered in ``cli.VERBS``."""

from __future__ import annotations

import sys

from cli import VERBS, build_parser, main

__all__ = ["VERBS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
