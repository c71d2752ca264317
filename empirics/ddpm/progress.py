"""The one progress bar of the DDPM and Section 5 loops: tqdm on a terminal, silent in logs."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(it, enabled: bool, desc: str, initial: int = 0, total: int | None = None, stream=None):
    """``it`` wrapped in a tqdm bar when ``enabled`` and ``stream`` (default ``sys.stderr``, where tqdm
    writes) is a terminal; otherwise ``it`` itself, so non-interactive logs get no bar lines."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if not enabled or not callable(isatty) or not isatty():
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, initial=initial, total=total, dynamic_ncols=True, leave=False, file=stream)
