"""Beyond the paper: the rule-conforming error E (Def 4.3) vs t, against the separable floor.

For a grid of t (OU schedule, App. F) and both loss targets (one panel each: 'paper' = eq. (2) as
printed, 'score' = consistent DSM) the figure plots, on a log axis:

* eq. (1)'s per-patch networks, four activations, trained by exact GD on the population loss at
  App. F's size (d=100, m=20, 5000 epochs; ``train_many(..., workers=2)``); E exact
  (``population_rule_error``);
* Thm 4.5's closed form for linear activation, m = 1, at the point GD reaches (``linear_rule_error``);
* the separable floor: E of the best per-patch *score* (each patch's marginal score,
  ``separable_floor``), in the consistent-loss panel only: it is what a per-patch net approaches as it
  minimises the consistent loss, not what minimising eq. (2) as printed approaches (that loss's
  per-patch optimum is -beta times the marginal score). It is not a lower bound on E over all
  per-patch networks;
* the Bayes-optimal network of each loss over all functions (``bayes_optimal_rule_error``; for the
  score target that is the exact score, E = 0, which a log axis cannot show: listed, not drawn);
* ``JointTwoLayerScore`` networks (neurons see both rule patches; default ReLU only), trained on
  App. F's Monte Carlo loss, fixed sample set, since the exact loss does not cover them. A joint
  net over-fits its finite sample set, so E is estimated on fresh x_t (``rule_error``, error bars
  +-2 standard errors) and the JSON holds its loss on the training set and on a fresh sample set.

Default cost, measured on 2 idle CPU cores: exact training of the 80 per-patch nets ~30 s (2 worker
processes); 20 joint ReLU nets (m=20) at n=100 data x n_eps=10 noise draws, 2000 epochs (figure 6's
CPU Monte Carlo preset), ~2.4 s each (~50 s; App. F's 1000 x 1000 would take hours on a CPU); E of
each joint net on 100,000 fresh x_t. About 100 s in all, peak memory ~0.9 GB. ``--no-joint`` leaves ~1 minute.

Writes ``rule_floor.png/.pdf``, ``rule_floor.json`` (every number plotted, every setting, the
choices not in the paper, the joint nets' over-fitting diagnostics) and ``rule_floor.csv`` (one row
per curve point) under ``--out``. Run: ``python -m paper_figs.rule_floor`` or ``hidden-rules rule-floor``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time

import numpy as np

from cli.types import DIFFUSION_TIME, OUTPUT_FOLDER, POSITIVE, SEED, IntRange, positive_int
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs.figure6 import MC_CPU_SIZES
from theory.bounds import bayes_optimal_rule_error, linear_rule_error, separable_floor
from theory.losses import MonteCarloLoss, Target
from theory.network import ACTIVATIONS
from theory.population import population_rule_error
from theory.rule import rule_error
from theory.schedules import ou_schedule
from theory.train import TrainConfig, TrainingDiverged, train_many
from theory.zeta import parse_zeta

ACTS = ("relu", "linear", "quadratic", "cubic")
TIMES = tuple(round(0.1 * k, 1) for k in range(1, 11))  # 0.1, 0.2, ..., 1.0
# Joint nets: figure 6's CPU Monte Carlo preset, ~1 minute on 2 CPU cores (App. F's 1000 x 1000 would take hours).
JOINT_SIZES = dict(MC_CPU_SIZES)
JOINT_SAMPLES = 100_000  # fresh x_t per joint net for E
FRESH_LOSS_SIZES = {"n": 2000, "n_eps": 10}  # fresh sample set on which the joint nets' loss is re-measured
ERRORBAR_SE = 2.0  # joint error bars: +-2 standard errors
NAMES = ("rule_floor.png", "rule_floor.pdf", "rule_floor.json", "rule_floor.csv")
CSV_FIELDS = ("target", "curve", "architecture", "activation", "source", "t", "alpha", "beta", "rule_value",
              "bias", "variance", "total", "bias_se", "variance_se", "total_se", "drawn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="paper_figs/out", type=OUTPUT_FOLDER,
                   help="output folder (default: paper_figs/out)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--loss", choices=("paper", "score", "both"), default="both",
                   help="eq. (2) as printed ('paper'), consistent DSM ('score'), or both panels (default)")
    p.add_argument("--t", type=DIFFUSION_TIME, nargs="+", default=list(TIMES),
                   help="diffusion times, OU schedule (default 0.1, 0.2, ..., 1.0)")
    p.add_argument("--activations", nargs="+", default=list(ACTS), choices=list(ACTIVATIONS),
                   help="per-patch (eq. (1)) activations, exact training (default: all four)")
    p.add_argument("--d", type=positive_int(1_000_000), default=100, help="patch dimension (default 100, App. F)")
    p.add_argument("--m", type=positive_int(10_000), default=20,
                   help="neurons per patch of the per-patch nets (default 20, App. F)")
    p.add_argument("--epochs", type=positive_int(), default=5000,
                   help="exact GD epochs of the per-patch nets (default 5000, App. F)")
    p.add_argument("--lr", type=POSITIVE, default=None,
                   help="per-patch GD step size (default: per activation and loss)")
    p.add_argument("--zeta", default="uniform:0.2:0.8", help="zeta distribution (default uniform:0.2:0.8)")
    p.add_argument("--seed", type=SEED, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=positive_int(64), default=min(2, os.cpu_count() or 1),
                   help="processes for the exact training (default: min(2, CPU count))")
    p.add_argument("--no-joint", action="store_true", help="skip the joint networks")
    p.add_argument("--joint-activations", nargs="+", default=["relu"], choices=list(ACTIVATIONS),
                   help="activations of the joint nets (default: relu)")
    p.add_argument("--joint-m", type=positive_int(10_000), default=None, help="neurons of a joint net (default: --m)")
    p.add_argument("--joint-n", type=positive_int(), default=JOINT_SIZES["n"],
                   help=f"data in the joint nets' Monte Carlo sample set (default {JOINT_SIZES['n']})")
    p.add_argument("--joint-n-eps", type=positive_int(), default=JOINT_SIZES["n_eps"],
                   help=f"noise draws per datum (default {JOINT_SIZES['n_eps']})")
    p.add_argument("--joint-epochs", type=positive_int(), default=JOINT_SIZES["epochs"],
                   help=f"GD epochs of the joint nets (default {JOINT_SIZES['epochs']})")
    p.add_argument("--joint-lr", type=POSITIVE, default=None,
                   help="joint GD step size (default: per activation and loss)")
    p.add_argument("--joint-resample", action="store_true",
                   help="draw a fresh Monte Carlo sample set every epoch (no over-fitting; ~4x slower)")
    p.add_argument("--joint-samples", type=IntRange(2, 10_000_000), default=JOINT_SAMPLES,
                   help=f"fresh x_t for each joint net's E (default {JOINT_SAMPLES})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--no-progress", action="store_true")


def _check_args(args) -> tuple[str, ...]:
    """The loss targets to draw; ValueError for settings the configs do not check themselves."""
    if not args.t:
        raise ValueError("--t needs at least one time")
    if len(set(args.t)) != len(args.t):
        raise ValueError(f"--t has repeated values: {args.t}")
    for name in ("activations", "joint_activations"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise ValueError(f"--{name.replace('_', '-')} has repeated values: {values}")
    return ("paper", "score") if args.loss == "both" else (args.loss,)


def build_configs(args, targets) -> tuple[list[TrainConfig], list[TrainConfig]]:
    """(per-patch configs, exact estimator; joint configs, Monte Carlo) for every target, activation and t."""
    zeta = parse_zeta(args.zeta)
    per_patch = [TrainConfig(activation=a, t=t, d=args.d, m=args.m, zeta=zeta, target=target, estimator="exact",
                             epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device)
                 for target in targets for a in args.activations for t in args.t]
    joint = [] if args.no_joint else [
        TrainConfig(activation=a, t=t, d=args.d, m=args.m if args.joint_m is None else args.joint_m, zeta=zeta,
                    target=target, estimator="mc", architecture="joint", n=args.joint_n, n_eps=args.joint_n_eps,
                    epochs=args.joint_epochs, lr=args.joint_lr, seed=args.seed, resample=args.joint_resample,
                    device=args.device)
        for target in targets for a in args.joint_activations for t in args.t]
    return per_patch, joint


def _point(target, curve, architecture, activation, source, t, alpha, beta, err, drawn=True) -> dict:
    rec = {"target": target, "curve": curve, "architecture": architecture, "activation": activation,
           "source": source, "t": t, "alpha": alpha, "beta": beta, "rule_value": alpha / beta**2}
    rec.update({k: err.as_dict()[k] for k in ("bias", "variance", "total", "bias_se", "variance_se", "total_se")})
    rec["drawn"] = bool(drawn)
    return rec


def per_patch_points(results) -> list[dict]:
    """Exact E of each trained per-patch net, with its final (exact) loss and gradient norm."""
    points = []
    for res in results:
        c = res.config
        alpha, beta = c.alpha_beta
        err = population_rule_error(res.net, c.data(), alpha, beta)
        rec = _point(c.target, f"per-patch {c.activation}", "per_patch", c.activation, "exact (population)",
                     c.t, alpha, beta, err)
        rec["train"] = {"final_loss_exact": res.history["loss"][-1], "final_grad_norm": res.history["grad_norm"][-1],
                        "seconds": res.seconds}
        points.append(rec)
    return points


def joint_points(results, samples: int, seed: int) -> list[dict]:
    """E of each joint net on fresh x_t (Monte Carlo, with standard errors) and its loss on the training
    sample set vs on a fresh sample set (the over-fitting gap)."""
    points = []
    for i, res in enumerate(results):
        c = res.config
        alpha, beta = c.alpha_beta
        data = c.data()
        err = rule_error(res.net, data, alpha, beta, n=samples, rng=np.random.default_rng([seed, 11, i]))
        rec = _point(c.target, f"joint {c.activation}", "joint", c.activation,
                     f"Monte Carlo, {samples} fresh x_t", c.t, alpha, beta, err)
        fresh = MonteCarloLoss(data, alpha, beta, target=c.target, seed=10_000 + c.seed, device=c.device,
                               **FRESH_LOSS_SIZES)
        rec["train"] = {"final_loss_training_set": res.history["loss"][-1], "loss_fresh_samples": fresh.value(res.net),
                        "loss_fresh_samples_se": fresh.standard_error(res.net),
                        "final_grad_norm": res.history["grad_norm"][-1], "seconds": res.seconds}
        points.append(rec)
    return points


def reference_points(zeta, times, targets) -> list[dict]:
    """Closed forms at each t: Thm 4.5's linear m = 1 GD limit, the Bayes-optimal net of the loss and,
    for the consistent ('score') target only, the separable floor: the E of that loss's per-patch
    optimum. Eq. (2) as printed has a different per-patch optimum, so no floor is listed for it."""
    points = []
    for t in times:
        alpha, beta = ou_schedule(t)
        floor = separable_floor(zeta, alpha, beta)
        for target in targets:
            points.append(_point(target, "linear m=1 (Thm 4.5)", "per_patch", "linear", "closed form", t, alpha, beta,
                                 linear_rule_error(zeta, alpha, beta, target)))
            if target == "score":
                points.append(_point(target, "separable floor", "per_patch", None, "quadrature", t, alpha, beta,
                                     floor))
            bayes = bayes_optimal_rule_error(alpha, beta, target)
            points.append(_point(target, "Bayes-optimal of the loss", "any", None, "closed form", t, alpha, beta,
                                 bayes, drawn=bayes.total > 0))
    return points


def floor_comparison(points) -> list[dict]:
    """Each joint point of the consistent loss against the separable floor at its t: difference and its
    standard error (the printed loss has no floor point, see ``reference_points``)."""
    floor = {(p["target"], p["t"]): p["total"] for p in points if p["curve"] == "separable floor"}
    out = []
    for p in points:
        if p["architecture"] != "joint" or (p["target"], p["t"]) not in floor:
            continue
        f = floor[(p["target"], p["t"])]
        diff, se = p["total"] - f, p["total_se"]
        verdict = ("below" if diff + ERRORBAR_SE * se < 0 else "above" if diff - ERRORBAR_SE * se > 0
                   else f"within {ERRORBAR_SE:g} SE")
        out.append({"target": p["target"], "curve": p["curve"], "t": p["t"], "E": p["total"], "E_se": se,
                    "separable_floor": f, "E_minus_floor": diff, "verdict": verdict})
    return out


STYLE = {
    "per-patch relu": {"color": "#4c72b0", "marker": "o"}, "per-patch linear": {"color": "#55a868", "marker": "s"},
    "per-patch quadratic": {"color": "#c44e52", "marker": "^"}, "per-patch cubic": {"color": "#8172b2", "marker": "v"},
    "linear m=1 (Thm 4.5)": {"color": "black", "ls": "--", "marker": ""},
    "separable floor": {"color": "#777777", "ls": ":", "lw": 2.5, "marker": ""},
    "Bayes-optimal of the loss": {"color": "#dd8452", "ls": "-.", "marker": ""},
}
PANEL_TITLE = {"paper": "loss: eq. (2) as printed (target eps)", "score": "loss: consistent DSM (target -eps/beta)"}


def plot(points, targets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(6.2 * len(targets), 4.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        curves = list(dict.fromkeys(p["curve"] for p in points if p["target"] == target))
        for curve in curves:
            pts = sorted((p for p in points if p["target"] == target and p["curve"] == curve), key=lambda p: p["t"])
            drawn = [p for p in pts if p["drawn"]]
            if not drawn:
                ax.plot([], [], " ", label=f"{curve}: E = 0 (not drawn)")
                continue
            ts, es = [p["t"] for p in drawn], [p["total"] for p in drawn]
            if curve.startswith("joint"):
                bars = [ERRORBAR_SE * p["total_se"] for p in drawn]
                ax.errorbar(ts, es, yerr=bars, color="#e377c2", marker="D", ms=5, lw=1.8, capsize=3,
                            label=f"{curve} (Monte Carlo, +-{ERRORBAR_SE:g} SE)")
            else:
                s = STYLE.get(curve, {})
                label = curve + (" (exact GD)" if curve.startswith("per-patch") else "")
                ax.plot(ts, es, color=s.get("color"), ls=s.get("ls", "-"), lw=s.get("lw", 1.5),
                        marker=s.get("marker", "o"), ms=4, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("t (OU schedule)")
        ax.set_ylabel(r"rule-conforming error $E$ (Def 4.3)")
        ax.set_title(PANEL_TITLE[target], fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle("Rule error of per-patch and joint score nets vs the separable floor", fontsize=11)
    fig.tight_layout()
    return fig


def _csv_bytes(points) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(points)
    return buf.getvalue().encode()


def _fmt(p) -> str:
    if p is None:
        return "-"
    if p["total_se"] is not None:
        return f"{p['total']:.4g}+-{p['total_se']:.1g}"
    return f"{p['total']:.4g}"


def print_table(points, targets, times) -> None:
    for target in targets:
        curves = list(dict.fromkeys(p["curve"] for p in points if p["target"] == target))
        index = {(p["curve"], p["t"]): p for p in points if p["target"] == target}
        width = [max(len(c), 12) for c in curves]
        print(f"\nE (Def 4.3), loss target {target!r}")
        print(f"{'t':>5} " + " ".join(f"{c:>{w}}" for c, w in zip(curves, width)))
        for t in times:
            print(f"{t:>5g} " + " ".join(f"{_fmt(index.get((c, t))):>{w}}" for c, w in zip(curves, width)))


def run(args) -> int:
    targets = _check_args(args)
    per_patch_cfgs, joint_cfgs = build_configs(args, targets)
    paths = prepare_outputs(args.out, NAMES, args.overwrite)
    zeta = per_patch_cfgs[0].zeta
    t_start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        per_patch = train_many(per_patch_cfgs, progress=not args.no_progress, workers=args.workers)
        exact_seconds = time.perf_counter() - t0
        print(f"trained {len(per_patch_cfgs)} per-patch nets (exact GD, {args.workers} worker(s)) in "
              f"{exact_seconds:.1f} s")
        t0 = time.perf_counter()
        joint = train_many(joint_cfgs, progress=not args.no_progress) if joint_cfgs else []
        joint_seconds = time.perf_counter() - t0
    except TrainingDiverged as err:
        raise ValueError(f"{err} (joint nets: --joint-lr; per-patch nets: --lr)") from err
    if joint_cfgs:
        print(f"trained {len(joint_cfgs)} joint nets (Monte Carlo, n={args.joint_n}, n_eps={args.joint_n_eps}, "
              f"{args.joint_epochs} epochs) in {joint_seconds:.1f} s")
    t0 = time.perf_counter()
    points = per_patch_points(per_patch) + reference_points(zeta, args.t, targets)
    points += joint_points(joint, args.joint_samples, args.seed)
    eval_seconds = time.perf_counter() - t0
    comparison = floor_comparison(points)
    png, pdf, js, csv_path = paths
    fig = plot(points, targets)
    save_figure(fig, png)
    save_figure(fig, pdf)
    atomic_write_bytes(csv_path, _csv_bytes(points))
    lr_of = {f"{c.target}/{c.activation}": c.step_size for c in per_patch_cfgs}
    joint_lr = {f"{c.target}/{c.activation}": c.step_size for c in joint_cfgs}
    write_json(js, {
        "figure": "rule floor (beyond the paper)",
        "loss_targets": [Target.parse(t).value for t in targets],
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "choices_not_in_paper": {
            "zeta": zeta.describe(), "t_grid": list(args.t),
            "per_patch": {"estimator": "exact (population loss, n, n_eps -> infinity)",
                          "init_std": per_patch_cfgs[0].init_scale, "lr": lr_of},
            "joint": None if not joint_cfgs else {
                "architecture": "JointTwoLayerScore: g(x) = sum_r sigma(<w_r, [x1; x2]>) w_r, w_r in R^(2d)",
                "m": joint_cfgs[0].m, "estimator": "Monte Carlo (App. F's loss)", "n": args.joint_n,
                "n_eps": args.joint_n_eps, "epochs": args.joint_epochs, "init_std": joint_cfgs[0].init_scale,
                "lr": joint_lr,
                "sample_set": ("fresh every epoch (resample)" if args.joint_resample else
                               "one fixed set per (t, target), drawn once as App. F"),
                "evaluation": (f"E on {args.joint_samples} fresh x_t (theory.rule.rule_error), never on the "
                               f"training samples; the loss also on a fresh set of n={FRESH_LOSS_SIZES['n']} x "
                               f"n_eps={FRESH_LOSS_SIZES['n_eps']} (train.loss_fresh_samples) beside the training-"
                               "set loss: a training-set loss below the fresh one is over-fitting"),
                "error_bars": f"+-{ERRORBAR_SE:g} standard errors of E (delta method, rule_error)",
            },
            "note": "The paper gives neither zeta's distribution, the init scale nor the step size; the joint "
                    "net, the separable floor and the Monte Carlo sizes are ours.",
        },
        "notes": {
            "separable_floor": "E of the loss-optimal per-patch score (marginal score of each patch), "
                               "theory.bounds.separable_floor; consistent-loss panel only. A per-patch net "
                               "approaches it as it minimises the consistent loss (eq. (2) as printed has another "
                               "per-patch optimum, -beta times the marginal score); it is not a lower bound on E "
                               "over all per-patch networks (a net with psi_t close to alpha/beta^2 for all x_t has a "
                               "smaller E and a worse loss).",
            "bayes_optimal": "E of the loss minimiser over all functions: 'paper' 2 (1 + beta)^2 / beta^2; "
                             "'score' the exact score, E = 0 (not drawn on the log axis).",
        },
        "seconds": {"exact_training": exact_seconds, "joint_training": joint_seconds,
                    "evaluation": eval_seconds, "total": time.perf_counter() - t_start},
        "joint_vs_floor": comparison,
        "points": points,
    })
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    print_table(points, targets, list(args.t))
    if comparison:
        print(f"\njoint nets vs the separable floor ({ERRORBAR_SE:g} SE):")
        for c in comparison:
            print(f"  {c['target']:<5} {c['curve']:<12} t={c['t']:<4g} E={c['E']:.4g}+-{c['E_se']:.2g}  "
                  f"floor={c['separable_floor']:.4g}  {c['verdict']}")
        exact_loss = {(p["target"], p["activation"], p["t"]): p["train"]["final_loss_exact"]
                      for p in points if p["curve"].startswith("per-patch")}
        print("joint nets' loss: on their training set, on fresh samples, and the exact loss of the per-patch "
              "net of the same activation")
        for p in (p for p in points if p["architecture"] == "joint"):
            tr = p["train"]
            same = exact_loss.get((p["target"], p["activation"], p["t"]))
            print(f"  {p['target']:<5} {p['curve']:<12} t={p['t']:<4g} training set {tr['final_loss_training_set']:.5g}"
                  f", fresh {tr['loss_fresh_samples']:.5g}+-{tr['loss_fresh_samples_se']:.2g}, per-patch "
                  + ("-" if same is None else f"{same:.5g}"))
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m paper_figs.rule_floor ...: the verb 'rule-floor' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('rule-floor'))
