"""App. A: the Gaussian mixture of eq. (5) and its moment-matched Gaussian (eq. (6)) have FID 0 (eq. (7))
yet different inter-feature structure.

Panels: the density of the mixture p, the density of the Gaussian q, and E[y | x] with +-1 sd bands
for both (p: tanh(x), q: x/2). Writes ``appendix_a.png/.pdf`` and ``appendix_a.json`` (FID, means,
covariances and the conditional curves on the plotted grid). Run: ``python -m paper_figs.appendix_a``
or ``hidden-rules appendix-a``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from cli.types import POSITIVE, IntRange
from paper_figs._io import add_output_arguments, prepare_outputs, save_figure, write_json
from theory.gmm import appendix_a_mixture, mixture_fid, moment_matched_gaussian

MAX_GRID = 4001  # grid points per axis: a few float64 arrays of MAX_GRID^2 values (~130 MB each)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    p.add_argument("--grid", type=IntRange(11, MAX_GRID), default=201, help="grid points per axis (default 201)")
    p.add_argument("--extent", type=POSITIVE, default=4.5, help="half-width of the plotted square (default 4.5)")


def compute(grid: int, extent: float) -> dict:
    if grid < 11:
        raise ValueError(f"--grid must be >= 11, got {grid}")
    if not extent > 0:
        raise ValueError(f"--extent must be > 0, got {extent}")
    p = appendix_a_mixture()
    q = moment_matched_gaussian(p)
    axis = np.linspace(-extent, extent, grid)
    xx, yy = np.meshgrid(axis, axis)
    pts = np.stack([xx, yy], axis=-1)
    mean_p, var_p = p.conditional(axis)
    mean_q, var_q = q.conditional(axis)
    return {
        "axis": axis, "density_p": p.density(pts), "density_q": q.density(pts),
        "cond_p": (mean_p, var_p), "cond_q": (mean_q, var_q),
        "fid": mixture_fid(p, q), "p": p, "q": q,
    }


def plot(res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = res["axis"]
    ext = [axis[0], axis[-1], axis[0], axis[-1]]
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.0))
    vmax = max(res["density_p"].max(), res["density_q"].max())
    for ax, key, title in ((axes[0], "density_p", "p: mixture, eq. (5)"),
                           (axes[1], "density_q", "q: moment-matched Gaussian, eq. (6)")):
        ax.imshow(res[key], origin="lower", extent=ext, cmap="viridis", vmin=0, vmax=vmax)
        ax.contour(axis, axis, res[key], levels=6, colors="white", linewidths=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax = axes[2]
    curves = (("cond_p", "#4c72b0", "p: E[y|x] = tanh(x)"), ("cond_q", "#c44e52", "q: E[y|x] = x/2"))
    for key, colour, label in curves:
        mean, var = res[key]
        sd = np.sqrt(var)
        ax.plot(axis, mean, color=colour, lw=2, label=label)
        ax.fill_between(axis, mean - sd, mean + sd, color=colour, alpha=0.15)
    ax.set_xlabel("x")
    ax.set_ylabel("E[y | x] (+-1 sd)")
    ax.set_title(f"same mean and covariance: FID = {res['fid']:.1e}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("App. A: FID 0, different inter-feature rule", fontsize=11)
    fig.tight_layout()
    return fig


def run(args) -> int:
    names = ["appendix_a.png", "appendix_a.pdf", "appendix_a.json"]
    png, pdf, js = prepare_outputs(args.out, names, args.overwrite)
    res = compute(args.grid, args.extent)
    fig = plot(res)
    save_figure(fig, png)
    save_figure(fig, pdf)
    p, q = res["p"], res["q"]
    write_json(js, {
        "figure": "App. A",
        "fid": res["fid"],
        "p": {"weights": p.weights.tolist(), "means": p.means.tolist(), "covs": p.covs.tolist(),
              "mean": p.mean.tolist(), "covariance": p.covariance.tolist()},
        "q": {"mean": q.mean.tolist(), "covariance": q.covariance.tolist()},
        "x": res["axis"].tolist(),
        "conditional_mean_p": res["cond_p"][0].tolist(), "conditional_var_p": res["cond_p"][1].tolist(),
        "conditional_mean_q": res["cond_q"][0].tolist(), "conditional_var_q": res["cond_q"][1].tolist(),
    })
    print(f"wrote {png}, {pdf}, {js}")
    print(f"FID(p, q) = {res['fid']:.3e}; Cov_p = {p.covariance.tolist()}, Cov_q = {q.covariance.tolist()}")
    for x in (1.0, 4.0):
        i = int(np.argmin(np.abs(res["axis"] - x)))
        print(f"at x = {res['axis'][i]:.2f}: E_p[y|x] = {res['cond_p'][0][i]:.4f}, "
              f"E_q[y|x] = {res['cond_q'][0][i]:.4f}")
    return 0


if __name__ == "__main__":  # python -m paper_figs.appendix_a ...: the verb 'appendix-a' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('appendix-a'))
