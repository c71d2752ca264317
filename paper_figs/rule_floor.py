"""Beyond the paper: the rule-conforming error E (Def 4.3) vs t, against the separable floor.

For a grid of t (OU schedule, App. F) and both loss targets (one panel each: 'paper' = eq. (2) as
printed, 'score' = consistent DSM) the figure plots, on a log axis:

* eq. (1)'s per-patch networks, four activations, trained by exact GD on the population loss at
  App. F's size (d=100, m=20, 5000 epochs; ``train_many(..., workers=2)``); E exact
  (``population_rule_error``);
* ``JointTwoLayerScore`` networks (neurons see both rule patches; default ReLU only, m = 20), trained the
  same way: exact GD on their population loss (``TrainConfig(architecture="joint", estimator="exact")``,
  ``theory.population.joint``), E exact. No sample set, so no over-fitting and no error bars;
* Thm 4.5's closed form for linear activation, m = 1, at the point GD reaches (``linear_rule_error``);
* the separable floor: E of the best per-patch *score* (each patch's marginal score,
  ``separable_floor``), in the consistent-loss panel only: it is what a per-patch net approaches as it
  minimises the consistent loss, not what minimising eq. (2) as printed approaches (that loss's
  per-patch optimum is -beta times the marginal score). It is not a lower bound on E over all
  per-patch networks;
* the Bayes-optimal network of each loss over all functions (``bayes_optimal_rule_error``; for the
  score target that is the exact score, E = 0, which a log axis cannot show: listed, not drawn).

Convergence: every trained point carries its loss change over the last 10 % of its epochs (``convergence``).
Cost (``seconds`` of ``docs/rule_floor.json``, with the CPU seconds of this process and its worker): the 80
per-patch and the 20 joint ReLU nets (5000 epochs each, 2 processes) take about the same time, ~133 CPU s in
all; docs/rule_floor.md gives the measured wall time and the load beside it.

Writes ``rule_floor.png/.pdf``, ``rule_floor.json`` (every number plotted, every setting, the
choices not in the paper) and ``rule_floor.csv`` (one row per curve point) under ``--out``.
Run: ``python -m paper_figs.rule_floor`` or ``hidden-rules rule-floor``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import sys
import time

from cli.types import DIFFUSION_TIME, POSITIVE, SEED, positive_int
from paper_figs._io import add_output_arguments, atomic_write_bytes, prepare_outputs, save_figure, write_json
from theory.bounds import bayes_optimal_rule_error, linear_rule_error, separable_floor
from theory.losses import Target
from theory.network import ACTIVATIONS
from theory.population import population_rule_error
from theory.schedules import ou_schedule
from theory.train import TrainConfig, TrainingDiverged, train_many
from theory.zeta import parse_zeta

ACTS = ("relu", "linear", "quadratic", "cubic")
TIMES = tuple(round(0.1 * k, 1) for k in range(1, 11))  # 0.1, 0.2, ..., 1.0
TAIL = 0.1  # convergence: the loss change over the last 10 % of the epochs
NAMES = ("rule_floor.png", "rule_floor.pdf", "rule_floor.json", "rule_floor.csv")
CSV_FIELDS = ("target", "curve", "architecture", "activation", "source", "t", "alpha", "beta", "rule_value",
              "bias", "variance", "total", "drawn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
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
    p.add_argument("--joint-epochs", type=positive_int(), default=None,
                   help="exact GD epochs of the joint nets (default: --epochs)")
    p.add_argument("--joint-lr", type=POSITIVE, default=None,
                   help="joint GD step size (default: per activation and loss, as the per-patch nets)")
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
    """(per-patch configs, joint configs), both exact GD on the population loss, for every target, activation, t."""
    zeta = parse_zeta(args.zeta)
    per_patch = [TrainConfig(activation=a, t=t, d=args.d, m=args.m, zeta=zeta, target=target, estimator="exact",
                             epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device)
                 for target in targets for a in args.activations for t in args.t]
    joint = [] if args.no_joint else [
        TrainConfig(activation=a, t=t, d=args.d, m=args.m if args.joint_m is None else args.joint_m, zeta=zeta,
                    target=target, estimator="exact", architecture="joint",
                    epochs=args.epochs if args.joint_epochs is None else args.joint_epochs, lr=args.joint_lr,
                    seed=args.seed, device=args.device)
        for target in targets for a in args.joint_activations for t in args.t]
    return per_patch, joint


def convergence(history: dict, tail: float = TAIL) -> dict:
    """Loss change over the last ``tail`` of the epochs: the logged loss at the first logged epoch >= (1 - tail)
    epochs minus the final loss (>= 0 while GD still descends), relative to the final loss's magnitude."""
    epochs, losses = history["epoch"], history["loss"]
    if not epochs:
        return {"epochs": 0, "final_loss": None, "tail_change": None, "tail_relative_change": None}
    cut = (1 - tail) * epochs[-1]
    k = next(i for i, e in enumerate(epochs) if e >= cut)
    change = losses[k] - losses[-1]
    return {"epochs": epochs[-1], "tail_from_epoch": epochs[k], "final_loss": losses[-1], "tail_change": change,
            "tail_relative_change": abs(change) / max(abs(losses[-1]), 1e-300),
            "final_grad_norm": history["grad_norm"][-1]}


def _point(target, curve, architecture, activation, source, t, alpha, beta, err, drawn=True) -> dict:
    rec = {"target": target, "curve": curve, "architecture": architecture, "activation": activation,
           "source": source, "t": t, "alpha": alpha, "beta": beta, "rule_value": alpha / beta**2}
    rec.update({k: err.as_dict()[k] for k in ("bias", "variance", "total")})
    rec["drawn"] = bool(drawn)
    return rec


def trained_points(results) -> list[dict]:
    """Exact E of each trained net (per-patch or joint), with its convergence and training time."""
    points = []
    for res in results:
        c = res.config
        alpha, beta = c.alpha_beta
        err = population_rule_error(res.net, c.data(), alpha, beta)
        kind = "joint" if c.architecture == "joint" else "per-patch"
        rec = _point(c.target, f"{kind} {c.activation}", c.architecture, c.activation, "exact (population)",
                     c.t, alpha, beta, err)
        rec["train"] = {**convergence(res.history), "lr": c.step_size, "seconds": res.seconds}
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


def joint_comparison(points) -> list[dict]:
    """Each joint point against the per-patch net of the same activation, target and t and, for the consistent
    loss, against the separable floor (the printed loss has no floor point, see ``reference_points``)."""
    floor = {(p["target"], p["t"]): p["total"] for p in points if p["curve"] == "separable floor"}
    per_patch = {(p["target"], p["activation"], p["t"]): p for p in points if p["architecture"] == "per_patch"
                 and p["curve"].startswith("per-patch")}
    out = []
    for p in (p for p in points if p["architecture"] == "joint"):
        key = (p["target"], p["t"])
        pp = per_patch.get((p["target"], p["activation"], p["t"]))
        f = floor.get(key)
        out.append({"target": p["target"], "curve": p["curve"], "t": p["t"], "E": p["total"],
                    "E_per_patch": None if pp is None else pp["total"],
                    "joint_over_per_patch": None if pp is None else p["total"] / pp["total"],
                    "loss_joint": p["train"]["final_loss"],
                    "loss_per_patch": None if pp is None else pp["train"]["final_loss"],
                    "separable_floor": f, "joint_over_floor": None if f is None else p["total"] / f,
                    "verdict_floor": None if f is None else ("below" if p["total"] < f else "above")})
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
            if curve.startswith("joint"):  # the per-patch colour of its activation, dashed, diamonds
                color = STYLE.get("per-patch " + curve.split(" ", 1)[1], {}).get("color", "#e377c2")
                ax.plot(ts, es, color=color, ls="--", lw=1.8, marker="D", ms=5, label=f"{curve} (exact GD)")
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
    return "-" if p is None else f"{p['total']:.4g}"


def print_table(points, targets, times) -> None:
    for target in targets:
        curves = list(dict.fromkeys(p["curve"] for p in points if p["target"] == target))
        index = {(p["curve"], p["t"]): p for p in points if p["target"] == target}
        width = [max(len(c), 12) for c in curves]
        print(f"\nE (Def 4.3), loss target {target!r}")
        print(f"{'t':>5} " + " ".join(f"{c:>{w}}" for c, w in zip(curves, width)))
        for t in times:
            print(f"{t:>5g} " + " ".join(f"{_fmt(index.get((c, t))):>{w}}" for c, w in zip(curves, width)))


def _train(args, per_patch_cfgs, joint_cfgs) -> tuple[list, list, dict]:
    """(per-patch results, joint results, seconds): two ``train_many`` calls, each over ``--workers`` processes."""
    seconds = {}
    try:
        t0 = time.perf_counter()
        per_patch = train_many(per_patch_cfgs, progress=not args.no_progress, workers=args.workers)
        seconds["per_patch_training"] = time.perf_counter() - t0
        print(f"trained {len(per_patch_cfgs)} per-patch nets (exact GD, {args.workers} worker(s)) in "
              f"{seconds['per_patch_training']:.1f} s")
        t0 = time.perf_counter()
        joint = train_many(joint_cfgs, progress=not args.no_progress, workers=args.workers) if joint_cfgs else []
        seconds["joint_training"] = time.perf_counter() - t0
    except TrainingDiverged as err:
        raise ValueError(f"{err} (joint nets: --joint-lr; per-patch nets: --lr)") from err
    if joint_cfgs:
        print(f"trained {len(joint_cfgs)} joint nets (exact GD, m={joint_cfgs[0].m}, {joint_cfgs[0].epochs} "
              f"epochs, {args.workers} worker(s)) in {seconds['joint_training']:.1f} s")
    return per_patch, joint, seconds


def cpu_seconds() -> dict:
    """CPU seconds (user + system) of this process and of its finished children (the training workers): on a
    shared CPU they say what the wall time would be on idle cores better than the wall time does."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"cpu_this_process": own.ru_utime + own.ru_stime, "cpu_workers": children.ru_utime + children.ru_stime}


def _choices(args, zeta, per_patch_cfgs, joint_cfgs) -> dict:
    lr_of = {f"{c.target}/{c.activation}": c.step_size for c in per_patch_cfgs}
    joint_lr = {f"{c.target}/{c.activation}": c.step_size for c in joint_cfgs}
    return {
        "zeta": zeta.describe(), "t_grid": list(args.t),
        "per_patch": {"estimator": "exact (population loss, n, n_eps -> infinity)", "epochs": per_patch_cfgs[0].epochs,
                      "init_std": per_patch_cfgs[0].init_scale, "lr": lr_of},
        "joint": None if not joint_cfgs else {
            "architecture": "JointTwoLayerScore: g(x) = sum_r sigma(<w_r, [x1; x2]>) w_r, w_r in R^(2d)",
            "m": joint_cfgs[0].m, "estimator": "exact (population loss, theory.population.joint)",
            "epochs": joint_cfgs[0].epochs, "init_std": joint_cfgs[0].init_scale, "lr": joint_lr,
            "evaluation": "E exact (population_rule_error), as the per-patch nets"},
        "convergence": f"train.tail_change = loss at the first logged epoch >= {1 - TAIL:g} x epochs minus the "
                       "final loss; tail_relative_change = its magnitude over |final loss|",
        "note": "The paper gives neither zeta's distribution, the init scale nor the step size; the joint "
                "net and the separable floor are ours.",
    }


NOTES = {
    "separable_floor": "E of the loss-optimal per-patch score (marginal score of each patch), "
                       "theory.bounds.separable_floor; consistent-loss panel only. A per-patch net "
                       "approaches it as it minimises the consistent loss (eq. (2) as printed has another "
                       "per-patch optimum, -beta times the marginal score); it is not a lower bound on E "
                       "over all per-patch networks (a net with psi_t close to alpha/beta^2 for all x_t has a "
                       "smaller E and a worse loss).",
    "bayes_optimal": "E of the loss minimiser over all functions: 'paper' 2 (1 + beta)^2 / beta^2; "
                     "'score' the exact score, E = 0 (not drawn on the log axis).",
}


def _print_comparison(comparison, points) -> None:
    print("\njoint nets against the per-patch net of the same activation (and the separable floor, consistent loss):")
    for c in comparison:
        ratio = "-" if c["joint_over_per_patch"] is None else f"{c['joint_over_per_patch']:.3g}"
        floor = "" if c["separable_floor"] is None else (f", floor {c['separable_floor']:.4g} "
                                                          f"({c['joint_over_floor']:.3g}x, {c['verdict_floor']})")
        print(f"  {c['target']:<5} {c['curve']:<12} t={c['t']:<4g} E={c['E']:.4g}, joint/per-patch {ratio}{floor}")
    worst = max((p for p in points if "train" in p), key=lambda p: p["train"]["tail_relative_change"])
    print(f"convergence: largest relative loss change over the last {TAIL:.0%} of epochs "
          f"{worst['train']['tail_relative_change']:.2g} ({worst['target']}, {worst['curve']}, t={worst['t']:g})")


def run(args) -> int:
    targets = _check_args(args)
    per_patch_cfgs, joint_cfgs = build_configs(args, targets)
    paths = prepare_outputs(args.out, NAMES, args.overwrite)
    zeta = per_patch_cfgs[0].zeta
    t_start = time.perf_counter()
    per_patch, joint, seconds = _train(args, per_patch_cfgs, joint_cfgs)
    t0 = time.perf_counter()
    points = trained_points(per_patch) + reference_points(zeta, args.t, targets) + trained_points(joint)
    seconds["evaluation"] = time.perf_counter() - t0
    comparison = joint_comparison(points)
    png, pdf, js, csv_path = paths
    fig = plot(points, targets)
    save_figure(fig, png)
    save_figure(fig, pdf)
    atomic_write_bytes(csv_path, _csv_bytes(points))
    seconds["total"] = time.perf_counter() - t_start
    seconds.update(cpu_seconds())
    write_json(js, {
        "figure": "rule floor (beyond the paper)",
        "loss_targets": [Target.parse(t).value for t in targets],
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "choices_not_in_paper": _choices(args, zeta, per_patch_cfgs, joint_cfgs),
        "notes": NOTES,
        "seconds": seconds, "cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "joint_comparison": comparison,
        "points": points,
    })
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    print_table(points, targets, list(args.t))
    if comparison:
        _print_comparison(comparison, points)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m paper_figs.rule_floor ...: the verb 'rule-floor' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('rule-floor'))
