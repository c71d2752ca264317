"""Output helpers of the figure scripts: the atomic writers of ``empirics.atomic`` and ``save_figure``."""

from __future__ import annotations

from pathlib import Path

from empirics.atomic import atomic_write_bytes, prepare_outputs, write_json

__all__ = ["prepare_outputs", "atomic_write_bytes", "write_json", "save_figure"]


def save_figure(fig, path) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
