"""Plot pieces shared by the figure scripts (drawing only; every number comes from the library)."""

from __future__ import annotations

import numpy as np

from empirics.evaluator.metrics import trimmed_fit
from empirics.tasks import TARGET_SLOPE, Task

AXIS_LABELS = {Task.A: ("$l_1 h_2$", "$l_2 h_1$"), Task.B: ("$l_1 h_1$", "$l_2 h_2$"),
               Task.C: ("$r_{small}$", "$r_{large}$"), Task.D: ("$side_{top}$", "$side_{bottom}$")}


def rule_panel(ax, task: Task, x, y, valid, summary, title: str | None = None) -> None:
    """Fig. 3/4 panel: y against x of the valid images, trimmed points grey, ground truth and estimation lines."""
    k = TARGET_SLOPE[task]
    xv, yv = x[valid], y[valid]
    fit = trimmed_fit(xv, yv, summary["trim"])
    ax.scatter(xv[~fit.kept], yv[~fit.kept], s=4, color="#bbbbbb", label="trimmed")
    ax.scatter(xv[fit.kept], yv[fit.kept], s=4, color="#4c72b0", alpha=0.6, label="kept")
    grid = np.linspace(xv.min(), xv.max(), 2)
    ax.plot(grid, k * grid, color="#c44e52", lw=2, label=f"ground truth y = {k:.3g} x")
    ax.plot(grid, fit.beta1 * grid + fit.beta0, "--", color="black", lw=1.2,
            label=f"estimation y = {fit.beta1:.3f} x {fit.beta0:+.4f}")
    ax.set_title(title or f"Task {task.value}: $R^2$ = {summary['r2']:.4f}, Error = {summary['error']:.4f}",
                 fontsize=9)
    xl, yl = AXIS_LABELS[task]
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.legend(fontsize=6, loc="upper left")
    ax.tick_params(labelsize=7)
