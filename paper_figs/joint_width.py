"""Beyond the paper: the rule-conforming error E (Def 4.3) against width m, joint vs per-patch nets.

Does coupling the patches let score matching learn the rule (*)? For each activation, loss target ('paper' =
eq. (2) as printed, 'score' = consistent DSM), t (OU schedule, App. F) and width m, two architectures of the
same size (2 m d weights each) are trained by exact GD on the population loss (``theory.train``, estimator
"exact"): eq. (1)'s per-patch net (m neurons per patch) and ``JointTwoLayerScore`` (m neurons, each seeing
both rule patches). E, its bias and its variance are exact (``population_rule_error``). Beside them:

* the separable level: E of the loss-optimal per-patch score (``theory.bounds.separable_floor``; the
  consistent loss's per-patch optimum, not a lower bound over networks);
* the linear closed forms: Thm 4.5's per-patch GD limit (``linear_rule_error``, m = 1) and the rank-m
  optimum of the linear joint net (``derivations.joint``: m = 1 ``rank_one_rule_error``, m >= 2
  ``rank_two_rule_error``, which holds for every m >= 2 with P = 2), to tell GD from the model class.

Defaults: the issue's grid m in {1, 2, 5, 20, 100, 2d}, t in {0.1, 0.4, 0.8}, all four activations, 5000
epochs (App. F), ``theory.train``'s step sizes, halved for a configuration (and recorded) each time its GD
diverges; but d = 20, not App. F's d = 100: there m = 2d = 200 ReLU nets cost ~0.4 s per epoch for 6
configurations (measured, one thread), hours for 5000 epochs. At d = 20, m = 100 exceeds 2d = 40 (a joint
net's rows live in R^(2d), a per-patch net's in R^d: more neurons, no more rank). Every trained point carries
its loss change over the last 10 % of its epochs (``rule_floor.convergence``).

Writes ``joint_width.png/.pdf``, ``joint_width.json`` (every point, the references, the settings, the
answers) and ``joint_width.csv`` (one row per trained point) under ``--out``. Run:
``python -m paper_figs.joint_width`` or ``hidden-rules joint-width``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from dataclasses import replace

from cli.types import DIFFUSION_TIME, SEED, positive_int
from paper_figs._io import add_output_arguments, prepare_outputs, save_figure, write_json, write_rows_csv
from paper_figs.rule_floor import convergence, cpu_seconds
from theory.bounds import linear_rule_error, separable_floor
from theory.network import ACTIVATIONS
from theory.population import population_rule_error
from theory.schedules import ou_schedule
from theory.train import TrainConfig, TrainingDiverged, train_many
from theory.zeta import parse_zeta

ACTS = ("relu", "linear", "quadratic", "cubic")
TIMES = (0.1, 0.4, 0.8)
WIDTHS = ("1", "2", "5", "20", "100", "2d")  # the grid; at the default d = 20, 100 > 2d
ARCHS = ("per_patch", "joint")
MAX_HALVINGS = 10  # step-size halvings per configuration before giving up
PARALLEL_FROM_M = 20  # narrower groups train in this process (spawning a worker costs more than they do)
NAMES = ("joint_width.png", "joint_width.pdf", "joint_width.json", "joint_width.csv")
CSV_FIELDS = ("activation", "architecture", "target", "t", "m", "alpha", "beta", "bias", "variance", "total",
              "lr", "lr_halvings", "final_loss", "tail_relative_change")


def width(text: str) -> str:
    """A width: a positive integer or '2d'."""
    if text == "2d":
        return text
    positive_int(1_000_000)(text)
    return str(int(text))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    p.add_argument("--loss", choices=("paper", "score", "both"), default="both",
                   help="eq. (2) as printed ('paper'), consistent DSM ('score'), or both (default)")
    p.add_argument("--t", type=DIFFUSION_TIME, nargs="+", default=list(TIMES),
                   help="diffusion times, OU schedule (default 0.1 0.4 0.8)")
    p.add_argument("--widths", type=width, nargs="+", default=list(WIDTHS),
                   help="widths m: positive integers or 2d (default 1 2 5 20 100 2d)")
    p.add_argument("--activations", nargs="+", default=list(ACTS), choices=list(ACTIVATIONS),
                   help="activations (default: all four)")
    p.add_argument("--d", type=positive_int(1_000_000), default=20,
                   help="patch dimension (default 20; App. F's 100 makes m = 2d unaffordable for ReLU)")
    p.add_argument("--epochs", type=positive_int(), default=5000, help="exact GD epochs (default 5000, App. F)")
    p.add_argument("--zeta", default="uniform:0.2:0.8", help="zeta distribution (default uniform:0.2:0.8)")
    p.add_argument("--seed", type=SEED, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=positive_int(64), default=min(2, os.cpu_count() or 1),
                   help="processes for the exact training of the wider nets (default: min(2, CPU count))")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--no-progress", action="store_true")


def _widths(args) -> list[int]:
    ms = sorted({2 * args.d if w == "2d" else int(w) for w in args.widths})
    if len(ms) != len(args.widths):
        raise ValueError(f"--widths has repeated values (with 2d = {2 * args.d}): {args.widths}")
    return ms


def _check_args(args) -> tuple[tuple[str, ...], list[int]]:
    for name in ("t", "activations"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise ValueError(f"--{name} has repeated values: {values}")
    if args.d < 2:
        raise ValueError(f"--d must be >= 2 (two rule patches need u and v), got {args.d}")
    return (("paper", "score") if args.loss == "both" else (args.loss,)), _widths(args)


def train_halving(configs: list[TrainConfig], workers: int, progress: bool) -> tuple[list, list[int]]:
    """``train_many`` with each configuration's step size halved (and counted) each time its GD diverges."""
    halvings = [0] * len(configs)
    while True:
        try:
            return train_many(configs, progress=progress, workers=workers), halvings
        except pickle.PicklingError:
            # a divergence inside a worker process cannot come back to this one (theory.train sends the diverged
            # net, whose activation holds lambdas): train this group again in this process, where it can
            workers = 1
        except TrainingDiverged as err:
            i = err.config
            if halvings[i] >= MAX_HALVINGS:
                raise ValueError(f"{err} (after {MAX_HALVINGS} step-size halvings)") from err
            configs[i] = replace(configs[i], lr=configs[i].step_size / 2)
            halvings[i] += 1


def trained_points(args, targets, widths) -> list[dict]:
    """Train every (activation, architecture, m) group over targets x t; one exact E per trained net."""
    zeta = parse_zeta(args.zeta)
    points = []
    for act in args.activations:
        for arch in ARCHS:
            for m in widths:
                cfgs = [TrainConfig(activation=act, t=t, d=args.d, m=m, zeta=zeta, target=target, estimator="exact",
                                    architecture=arch, epochs=args.epochs, seed=args.seed, device=args.device)
                        for target in targets for t in args.t]
                t0 = time.perf_counter()
                workers = args.workers if m >= PARALLEL_FROM_M else 1
                results, halvings = train_halving(cfgs, workers, not args.no_progress)
                seconds = time.perf_counter() - t0
                for res, h in zip(results, halvings):
                    c = res.config
                    alpha, beta = c.alpha_beta
                    err = population_rule_error(res.net, c.data(), alpha, beta)
                    points.append({"activation": act, "architecture": arch, "target": c.target, "t": c.t, "m": m,
                                   "alpha": alpha, "beta": beta, **{k: err.as_dict()[k] for k in
                                                                    ("bias", "variance", "total")},
                                   "lr": c.step_size, "lr_halvings": h, "train": convergence(res.history)})
                print(f"{act:9s} {arch:9s} m={m:<4d} {len(cfgs)} nets in {seconds:6.1f} s; E = "
                      + ", ".join(f"{p['total']:.4g}" for p in points[-len(cfgs):]), flush=True)
    return points


def reference_points(zeta, times, targets) -> list[dict]:
    """Per (target, t): the separable level, Thm 4.5's per-patch linear GD limit and the linear joint optimum
    (m = 1, and m >= 2) of ``derivations.joint`` evaluated at this zeta's moments."""
    from derivations import joint as J

    refs = []
    for t in times:
        alpha, beta = ou_schedule(t)
        sub = {J.alpha: alpha, J.beta: beta, J.m1: zeta.moment(1), J.m2: zeta.moment(2)}
        floor = separable_floor(zeta, alpha, beta)
        for target in targets:
            lin = linear_rule_error(zeta, alpha, beta, target)
            one = [float(x.subs(sub)) for x in J.rank_one_rule_error(target)]
            two = [float(x.subs(sub)) for x in J.rank_two_rule_error(target)]
            refs.append({"target": target, "t": t, "alpha": alpha, "beta": beta, "rule_value": alpha / beta**2,
                         "separable_floor": floor.total, "separable_floor_bias": floor.bias,
                         "separable_floor_variance": floor.variance,
                         "linear_per_patch_gd_m1": lin.total,
                         "linear_joint_optimum_m1": dict(zip(("total", "bias", "variance"), one)),
                         "linear_joint_optimum_m2_and_more": dict(zip(("total", "bias", "variance"), two))})
    return refs


def answers(points, refs) -> dict:
    """The study's questions, counted over the trained points (docs/joint_width.md states them in words)."""
    E = {(p["activation"], p["architecture"], p["target"], p["t"], p["m"]): p for p in points}
    floor = {(r["target"], r["t"]): r["separable_floor"] for r in refs}
    pairs = [(E[k], E[(k[0], "per_patch", *k[2:])]) for k in E if k[1] == "joint" and (k[0], "per_patch", *k[2:]) in E]
    ratios = [j["total"] / pp["total"] for j, pp in pairs]
    by_act = {}
    for act in dict.fromkeys(p["activation"] for p in points):
        rs = [j["total"] / pp["total"] for j, pp in pairs if j["activation"] == act]
        below = [j for j, pp in pairs if j["activation"] == act and j["total"] < pp["total"]]
        by_act[act] = {"pairs": len(rs), "joint_below_per_patch": len(below), "ratio_min": min(rs),
                       "ratio_max": max(rs)}
    trend = []
    for key in dict.fromkeys((p["activation"], p["architecture"], p["target"], p["t"]) for p in points):
        row = sorted((p for p in points if (p["activation"], p["architecture"], p["target"], p["t"]) == key),
                     key=lambda p: p["m"])
        trend.append({"activation": key[0], "architecture": key[1], "target": key[2], "t": key[3],
                      "E_smallest_m": row[0]["total"], "E_largest_m": row[-1]["total"],
                      "E_min_over_m": min(p["total"] for p in row),
                      "m_of_min": min(row, key=lambda p: p["total"])["m"],
                      "largest_over_smallest": row[-1]["total"] / row[0]["total"],
                      "largest_over_floor": row[-1]["total"] / floor[(key[2], key[3])]})
    over_floor = [p["total"] / floor[(p["target"], p["t"])] for p in points]
    # a per-patch net of width m is a joint net of width 2m with block-diagonal weights: same neurons, nested
    nested = [(E[(k[0], "joint", k[2], k[3], 2 * k[4])], E[k]) for k in E
              if k[1] == "per_patch" and (k[0], "joint", k[2], k[3], 2 * k[4]) in E]
    return {"joint_over_per_patch": {"pairs": len(ratios), "joint_below": sum(r < 1 for r in ratios),
                                     "min": min(ratios), "max": max(ratios), "by_activation": by_act,
                                     "joint_loss_below": sum(j["train"]["final_loss"] < pp["train"]["final_loss"]
                                                             for j, pp in pairs)},
            "joint_2m_over_per_patch_m": [
                {"activation": j["activation"], "target": j["target"], "t": j["t"], "m_per_patch": pp["m"],
                 "E_joint": j["total"], "E_per_patch": pp["total"], "ratio": j["total"] / pp["total"],
                 "loss_joint_minus_per_patch": j["train"]["final_loss"] - pp["train"]["final_loss"]}
                for j, pp in nested],
            "over_separable_floor": {"points": len(over_floor), "below": sum(r < 1 for r in over_floor),
                                     "min": min(over_floor), "max": max(over_floor)},
            "trend_in_m": trend,
            "max_tail_relative_change": max(p["train"]["tail_relative_change"] for p in points),
            "configs_with_lr_halved": sum(p["lr_halvings"] > 0 for p in points)}


COLORS = {0.1: "#4c72b0", 0.4: "#dd8452", 0.8: "#55a868"}


def plot(points, refs, targets, activations):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(activations), len(targets), figsize=(5.2 * len(targets), 3.4 * len(activations)),
                             squeeze=False)
    for i, act in enumerate(activations):
        for j, target in enumerate(targets):
            ax = axes[i][j]
            for t in dict.fromkeys(p["t"] for p in points):
                color = COLORS.get(t)
                for arch, ls, marker in (("per_patch", "-", "o"), ("joint", "--", "D")):
                    row = sorted((p for p in points if (p["activation"], p["architecture"], p["target"], p["t"])
                                  == (act, arch, target, t)), key=lambda p: p["m"])
                    ax.plot([p["m"] for p in row], [p["total"] for p in row], color=color, ls=ls, marker=marker,
                            ms=4, label=f"{arch.replace('_', '-')}, t={t:g}")
                ref = next(r for r in refs if (r["target"], r["t"]) == (target, t))
                if target == "score":  # the consistent loss's per-patch optimum (rule_floor's docstring)
                    ax.axhline(ref["separable_floor"], color=color, ls=":", lw=1)
                if act == "linear":
                    ax.axhline(ref["linear_joint_optimum_m2_and_more"]["total"], color=color, ls="-.", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ms = sorted({p["m"] for p in points})
            ax.set_xticks(ms, [str(m) for m in ms])
            ax.minorticks_off()
            ax.set_title(f"{act}, loss {target}", fontsize=9)
            ax.set_xlabel("width m")
            ax.set_ylabel("E (Def 4.3)")
            ax.grid(True, which="both", alpha=0.25)
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle("E vs width: per-patch (solid) and joint (dashed) nets; dotted: separable level (consistent "
                 "loss); dash-dot: linear joint optimum", fontsize=10)
    fig.tight_layout()
    return fig


def run(args) -> int:
    targets, widths = _check_args(args)
    zeta = parse_zeta(args.zeta)
    paths = prepare_outputs(args.out, NAMES, args.overwrite)
    t_start = time.perf_counter()
    points = trained_points(args, targets, widths)
    seconds = time.perf_counter() - t_start
    refs = reference_points(zeta, args.t, targets)
    summary = answers(points, refs)
    png, pdf, js, csv_path = paths
    fig = plot(points, refs, targets, list(args.activations))
    save_figure(fig, png)
    save_figure(fig, pdf)
    write_rows_csv(csv_path, [{**{k: p.get(k) for k in CSV_FIELDS}, "final_loss": p["train"]["final_loss"],
                               "tail_relative_change": p["train"]["tail_relative_change"]} for p in points])
    write_json(js, {
        "figure": "E against width, joint vs per-patch nets (beyond the paper)",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "widths": widths,
        "choices_not_in_paper": {
            "zeta": zeta.describe(), "estimator": "exact (population loss) for both architectures",
            "init_std": {"per_patch": TrainConfig(d=args.d).init_scale,
                         "joint": TrainConfig(d=args.d, architecture="joint").init_scale},
            "lr": "theory.train.DEFAULT_LR per (target, activation), halved per configuration on divergence "
                  f"(at most {MAX_HALVINGS} times); each point's lr and lr_halvings are listed",
            "convergence": "train.tail_relative_change: |loss at the first logged epoch >= 0.9 x epochs - final "
                           "loss| / |final loss|",
            "sizes": "per-patch: m neurons per patch (2 m d weights); joint: m neurons on both patches (2 m d)"},
        "seconds": seconds, **cpu_seconds(), "cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "answers": summary, "references": refs, "points": points,
    })
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    jp = summary["joint_over_per_patch"]
    fl = summary["over_separable_floor"]
    print(f"joint below per-patch in {jp['joint_below']} of {jp['pairs']} pairs (ratio {jp['min']:.3g}-"
          f"{jp['max']:.3g}); below the separable level: {fl['below']} of {fl['points']} points (E / level "
          f"{fl['min']:.3g}-{fl['max']:.3g}); largest relative loss change over the last 10 % of epochs "
          f"{summary['max_tail_relative_change']:.2g}; {summary['configs_with_lr_halved']} configs with lr halved")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":  # python -m paper_figs.joint_width ...: the verb 'joint-width' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('joint-width'))
