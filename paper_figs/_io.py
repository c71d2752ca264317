"""Output helpers shared by the figure scripts: never overwrite silently, write atomically."""

from __future__ import annotations

import json
from pathlib import Path

from empirics.atomic import atomic_write_bytes

__all__ = ["prepare_outputs", "atomic_write_bytes", "write_json", "save_figure"]


def prepare_outputs(out_dir, names, overwrite: bool) -> list[Path]:
    """Create ``out_dir`` and return the output paths; refuse to replace existing files unless asked."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / n for n in names]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"output files exist: {', '.join(existing)}; pass --overwrite to replace them")
    return paths


def write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_figure(fig, path) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
