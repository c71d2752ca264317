"""Figure 6: psi_t of trained two-layer score networks vs the rule value alpha_t / beta_t^2.

For each activation (ReLU, linear, quadratic, cubic) and t in {0.2, 0.4, 0.6, 0.8} (App. F: d=100,
m=20, OU schedule) a network of eq. (1) is trained by full-batch GD on eq. (2); psi_t (Def 4.3) is
evaluated on fresh x_t and histogrammed against alpha_t/beta_t^2, with bias and variance per panel.

By default the networks are trained on the exact population loss (``theory.population``, the
n, n_eps -> infinity limit of App. F's Monte Carlo loss) at App. F's sizes, for both loss targets,
all 32 trainings in one lock-step batch; ``--estimator mc`` trains on App. F's Monte Carlo loss instead
(App. F's sizes on a GPU, reduced sizes on a CPU). The psi histograms always use fresh sampled x_t; the
bias and variance printed in each panel are exact (``population_rule_error``) for eq. (1)'s network.

Writes, per loss target, ``figure6_<target>.png/.pdf``, ``figure6_<target>.json`` (every number
behind the plot: configs, histograms, rule errors, training histories) and
``figure6_<target>_psi.csv`` (the psi samples). Run: ``python -m paper_figs.figure6`` or
``hidden-rules figure6``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time

import numpy as np

from cli.types import DIFFUSION_TIME, POSITIVE, SEED, IntRange, check_memory, positive_int
from paper_figs._io import add_output_arguments, atomic_write_bytes, prepare_outputs, save_figure, write_json
from theory._checks import resolve_device
from theory.losses import Target
from theory.network import ACTIVATIONS
from theory.population import population_rule_error
from theory.rule import psi, rule_error
from theory.train import ESTIMATORS, TrainConfig, train_many
from theory.zeta import parse_zeta

ACTS = ("relu", "linear", "quadratic", "cubic")
TIMES = (0.2, 0.4, 0.6, 0.8)
# App. F's sizes: the default for the exact estimator (n, n_eps unused there) and for Monte Carlo on a GPU.
PAPER_SIZES = {"n": 1000, "n_eps": 1000, "epochs": 5000}
# Reduced Monte Carlo sizes when no GPU is present (~75 s per loss target on 2 cores).
MC_CPU_SIZES = {"n": 100, "n_eps": 10, "epochs": 2000}
MAX_D, MAX_M = 1_000_000, 10_000  # patch dimension and neurons: the (m, d) weights of every panel in memory


def default_sizes(estimator: str, device: str) -> dict:
    """App. F sizes, except Monte Carlo on a CPU, which gets sizes that finish in minutes."""
    if estimator == "mc" and resolve_device(device).type != "cuda":
        return dict(MC_CPU_SIZES)
    return dict(PAPER_SIZES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    p.add_argument("--loss", choices=("paper", "score", "both"), default="both",
                   help="eq. (2) as printed ('paper'), consistent DSM ('score'), or both (default)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="exact",
                   help="exact population loss (default) or App. F's Monte Carlo loss ('mc')")
    p.add_argument("--n", type=positive_int(), default=None,
                   help=f"data per epoch (mc only; default {PAPER_SIZES['n']} on a GPU, {MC_CPU_SIZES['n']} on CPU)")
    p.add_argument("--n-eps", type=positive_int(), default=None,
                   help=f"noise draws per datum (mc only; default {PAPER_SIZES['n_eps']} on a GPU, "
                        f"{MC_CPU_SIZES['n_eps']} on CPU)")
    p.add_argument("--epochs", type=positive_int(), default=None,
                   help=f"GD epochs (default {PAPER_SIZES['epochs']} as App. F; mc on CPU {MC_CPU_SIZES['epochs']})")
    p.add_argument("--resample", action="store_true",
                   help="mc only: a fresh sample every epoch instead of App. F's fixed sample set (default: fixed)")
    p.add_argument("--mc-dtype", choices=("float32", "float64"), default="float64",
                   help="Monte Carlo arithmetic (mc only; default float64)")
    p.add_argument("--d", type=positive_int(MAX_D), default=100, help="patch dimension d (default 100, App. F)")
    p.add_argument("--m", type=positive_int(MAX_M), default=20, help="neurons per patch m (default 20, App. F)")
    p.add_argument("--t", type=DIFFUSION_TIME, nargs="+", default=list(TIMES),
                   help="diffusion times, OU schedule (default 0.2 0.4 0.6 0.8, as Figure 6)")
    p.add_argument("--activations", nargs="+", default=list(ACTS), choices=list(ACTIVATIONS),
                   help="activations (default: relu linear quadratic cubic)")
    p.add_argument("--zeta", default="uniform:0.2:0.8", help="zeta distribution (default uniform:0.2:0.8)")
    p.add_argument("--lr", type=POSITIVE, default=None, help="GD step size (default: per activation and loss)")
    p.add_argument("--init-std", type=POSITIVE, default=None, help="init std (default 0.1/sqrt(d))")
    p.add_argument("--samples", type=IntRange(2), default=5000,
                   help="fresh x_t per panel for the histogram (default 5000, App. F)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of initialisation and samples (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save/resume Monte Carlo training here (default: no checkpoints)")
    p.add_argument("--workers", type=positive_int(64), default=min(2, os.cpu_count() or 1),
                   help="processes for exact training on CPU (default: min(2, CPU count))")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (training and sampling)")


def build_configs(args, target: str) -> list[TrainConfig]:
    defaults = default_sizes(args.estimator, args.device)
    sizes = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    zeta = parse_zeta(args.zeta)
    return [TrainConfig(activation=a, t=t, d=args.d, m=args.m, zeta=zeta, target=target, estimator=args.estimator,
                        n=sizes["n"], n_eps=sizes["n_eps"], epochs=sizes["epochs"], lr=args.lr,
                        init_std=args.init_std, seed=args.seed, mc_dtype=args.mc_dtype, device=args.device,
                        resample=args.resample)
            for a in args.activations for t in args.t]


def panel_results(results, samples: int, seed: int) -> list[dict]:
    """psi samples, histogram and rule error (Def 4.3) of each trained net on fresh x_t."""
    panels = []
    for i, res in enumerate(results):
        cfg = res.config
        alpha, beta = cfg.alpha_beta
        data = cfg.data()
        rng = np.random.default_rng([seed, 6, i])
        x_t = data.sample_xt(samples, alpha, beta, rng)
        values = psi(res.net, x_t, data).cpu().numpy()
        mc = rule_error(res.net, data, alpha, beta, n=samples, rng=np.random.default_rng([seed, 7, i]))
        panel = {"config": cfg.describe(), "alpha": alpha, "beta": beta, "rule_value": alpha / beta**2,
                 "psi": values, "rule_error_mc": mc.as_dict(), "train_seconds": res.seconds,
                 "final_loss": res.history["loss"][-1], "final_grad_norm": res.history["grad_norm"][-1],
                 "history": {k: list(v) for k, v in res.history.items()}}
        if not res.net.joint:  # exact moments of psi_t exist for eq. (1)'s per-patch network
            panel["rule_error_exact"] = population_rule_error(res.net, data, alpha, beta).as_dict()
        panels.append(panel)
    return panels


def plot(panels, acts, times, target: str, estimator: str = "exact"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(acts), len(times), figsize=(3.2 * len(times), 2.6 * len(acts)), squeeze=False)
    for panel in panels:
        cfg = panel["config"]
        ax = axes[acts.index(cfg["activation"])][times.index(cfg["t"])]
        values = panel["psi"]
        lo, hi = np.percentile(values, [0.5, 99.5])
        lo, hi = min(lo, panel["rule_value"]), max(hi, panel["rule_value"])
        pad = 0.05 * (hi - lo + 1e-12)
        counts, edges = np.histogram(values, bins=50, range=(lo - pad, hi + pad))
        panel["hist_counts"], panel["hist_edges"] = counts.tolist(), edges.tolist()
        ax.hist(values, bins=edges, color="#4c72b0", alpha=0.8)
        ax.axvline(panel["rule_value"], color="#c44e52", lw=2, label=r"$\alpha_t/\beta_t^2$")
        err = panel.get("rule_error_exact") or panel["rule_error_mc"]
        kind = "exact" if "rule_error_exact" in panel else "MC"
        # The statistics go in the title, where they cover no bars.
        ax.set_title(f"{cfg['activation']}, t={cfg['t']:g}\nbias {err['bias']:+.3g}, var {err['variance']:.3g} "
                     f"({kind})", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper right")
    name = "eq. (2) as printed (target eps)" if target == "paper" else "consistent DSM (target -eps/beta)"
    cfg = panels[0]["config"]
    how = ("exact population loss" if estimator == "exact"
           else f"Monte Carlo loss, n={cfg['n']} x n_eps={cfg['n_eps']}")
    fig.suptitle(f"Figure 6: psi_t of trained two-layer score nets (d={cfg['d']}, m={cfg['m']}) - loss: {name}\n"
                 f"GD {cfg['epochs']} epochs on the {how}; histograms of {panels[0]['psi'].size} fresh x_t",
                 fontsize=11)
    fig.supxlabel(r"$\psi_t(x_t)$")
    fig.tight_layout()
    return fig


def _jsonable(panels):
    out = []
    for p in panels:
        q = dict(p)
        values = q.pop("psi")
        pct = {str(k): float(np.percentile(values, k)) for k in (0.5, 2.5, 50, 97.5, 99.5)}
        q["psi_summary"] = {"n": int(values.size), "mean": float(values.mean()),
                            "variance": float(values.var(ddof=1)), "percentiles": pct}
        out.append(q)
    return out


def check_arguments(args) -> None:
    """Every flag checked before any work, each error naming its flag."""
    if args.estimator == "exact" and args.resample:
        raise ValueError("--resample applies to --estimator mc only (the exact estimator uses no samples)")
    if args.estimator == "exact" and (args.n is not None or args.n_eps is not None):
        raise ValueError("--n and --n-eps set the Monte Carlo sample; they apply to --estimator mc only "
                         "(the exact estimator uses no samples)")
    try:
        parse_zeta(args.zeta)
    except ValueError as exc:
        raise ValueError(f"--zeta: {exc}") from exc
    try:
        resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from exc
    # float64 x_t of both patches for the histogram, and (mc) the training sample
    check_memory(f"--samples {args.samples} at --d {args.d}", 3.0 * args.samples * 2 * args.d * 8)
    if args.estimator == "mc":
        sizes = default_sizes(args.estimator, args.device)
        n, n_eps = args.n or sizes["n"], args.n_eps or sizes["n_eps"]
        check_memory(f"--n {n} x --n-eps {n_eps} at --d {args.d}", 3.0 * n * n_eps * 2 * args.d * 8)


def run(args) -> int:
    check_arguments(args)
    targets = ("paper", "score") if args.loss == "both" else (args.loss,)
    names = []
    for target in targets:
        names += [f"figure6_{target}.{ext}" for ext in ("png", "pdf", "json")] + [f"figure6_{target}_psi.csv"]
    # All trainings in one call: the exact estimator runs every (activation, t, target) in one lock-step batch.
    per_target = {target: build_configs(args, target) for target in targets}
    paths = prepare_outputs(args.out, names, args.overwrite)
    t_start = time.perf_counter()
    all_configs = [c for target in targets for c in per_target[target]]
    t0 = time.perf_counter()
    all_results = train_many(all_configs, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
                             workers=args.workers)
    train_seconds = time.perf_counter() - t0
    print(f"trained {len(all_configs)} networks ({args.estimator} estimator) in {train_seconds:.1f} s")
    offset = 0
    for j, target in enumerate(targets):
        configs = per_target[target]
        results = all_results[offset: offset + len(configs)]
        offset += len(configs)
        panels = panel_results(results, args.samples, args.seed)
        fig = plot(panels, list(args.activations), list(args.t), target, args.estimator)
        png, pdf, js, csv_path = paths[4 * j: 4 * j + 4]
        save_figure(fig, png)
        save_figure(fig, pdf)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([f"{p['config']['activation']}_t{p['config']['t']:g}" for p in panels])
        writer.writerows(np.stack([p["psi"] for p in panels], axis=1).tolist())
        atomic_write_bytes(csv_path, buf.getvalue().encode())
        write_json(js, {
            "figure": "Figure 6", "loss_target": Target.parse(target).value,
            "choices_not_in_paper": {
                "zeta": configs[0].zeta.describe(), "init_std": configs[0].init_scale,
                "lr": {c.activation: c.step_size for c in configs},
                "note": "The paper gives neither the zeta distribution, the init scale nor the step size.",
            },
            "estimator": args.estimator, "samples_per_panel": args.samples, "seed": args.seed,
            "train_seconds_total": train_seconds, "trained_together": len(all_configs),
            "panels": _jsonable(panels),
        })
        print(f"wrote {png}, {pdf}, {js}, {csv_path}")
        source = "exact (population)" if all("rule_error_exact" in p for p in panels) else "Monte Carlo"
        print(f"loss target {target!r}; rule error {source}; psi histograms from {args.samples} fresh x_t")
        print(f"{'activation':<10} {'t':>4} {'alpha/beta^2':>12} {'bias':>9} {'variance':>9} {'E':>9} "
              f"{'grad norm':>9}")
        for p in panels:
            err = p.get("rule_error_exact") or p["rule_error_mc"]
            print(f"{p['config']['activation']:<10} {p['config']['t']:>4g} {p['rule_value']:>12.4f} "
                  f"{err['bias']:>9.4f} {err['variance']:>9.4f} {err['total']:>9.4f} {p['final_grad_norm']:>9.2g}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m paper_figs.figure6 ...: the verb 'figure6' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('figure6'))
