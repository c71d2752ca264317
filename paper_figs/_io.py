"""Output helpers of the figure scripts: the atomic writers of ``empirics.atomic`` and ``save_figure``."""

from __future__ import annotations

from pathlib import Path

from cli.types import OUTPUT_FOLDER
from empirics.atomic import atomic_write_bytes, prepare_outputs, write_json

__all__ = ["add_output_arguments", "prepare_outputs", "atomic_write_bytes", "write_json", "save_figure",
           "write_rows_csv"]


def add_output_arguments(p, default: str = "paper_figs/out") -> None:
    """``--out`` (a writable folder) and ``--overwrite``, the same in every figure verb."""
    p.add_argument("--out", default=default, type=OUTPUT_FOLDER, help=f"output folder (default: {default})")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def save_figure(fig, path) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), dpi=150, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_rows_csv(path, rows: list[dict]) -> None:
    """One CSV row per dict, atomically; the columns are the union of the keys in first-seen order."""
    import csv
    import io

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(columns), restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())
