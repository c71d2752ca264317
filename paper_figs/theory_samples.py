"""Beyond the paper: sample the multi-patch model (Def 4.1) with learned and closed-form scores, read the
samples as Section 3 reads images (Error eq. (4), R^2), beside the score-level E of Def 4.3.

Sources (``theory.sampling``): the exact score (Thm 4.2); eq. (1) per-patch nets of each activation and
``JointTwoLayerScore`` nets, trained by exact GD on the consistent ('score') population loss at every time of the
sampler's geometric grid (so each step uses the net of its own time: no interpolation); the marginal score (the
separable optimum); the empirical score of ``--n-train`` training points. Two extra rows at smaller t_min (the
closed-form sources only: the default step sizes of exact GD diverge below t ~ 0.05): the exact score at
``--exact-t-min`` and the empirical score at ``--empirical-t-min`` (where it memorizes).

Writes under ``--out``: ``theory_samples.json`` (``rows``: one per (score, activation, target, t_min) with the
sample metrics, their bootstrap CIs and E on the grid; ``by_t``: score- and sample-level numbers at every grid
time; settings, seconds, load), ``theory_samples.csv`` ((a, b) of every sample of every row) and
``theory_samples.png``/``.pdf`` (a Fig. 4-style scatter per source; E(t) beside the sample Error).
Run: ``python -m paper_figs.theory_samples`` or ``hidden-rules theory-samples``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np

from cli.types import DIFFUSION_TIME, POSITIVE, SEED, positive_int
from paper_figs._io import add_output_arguments, atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs.rule_floor import cpu_seconds
from theory import MultiPatchData
from theory.bounds import separable_floor
from theory.network import ACTIVATIONS
from theory.population import population_rule_error
from theory.rule import RuleError
from theory.sample_metrics import sample_metrics
from theory.sampling import (
    DEFAULT_T_MAX,
    EmpiricalScore,
    MarginalScore,
    NetGridScore,
    Process,
    SamplerConfig,
    TrueScore,
    predicted_rule_residual,
    sample_rule_coordinates,
    source_rule_error,
)
from theory.schedules import ou_schedule
from theory.train import TrainConfig, TrainingDiverged, train_many
from theory.zeta import parse_zeta

ACTS = ("relu", "linear", "quadratic", "cubic")
NAMES = ("theory_samples.png", "theory_samples.pdf", "theory_samples.json", "theory_samples.csv")
BY_T_SAMPLE_KEYS = ("slope", "intercept", "r2", "error", "error_bias", "error_variance", "corr", "residual_mean",
                    "residual_sd")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    p.add_argument("--d", type=positive_int(10_000), default=100, help="patch dimension (default 100, App. F)")
    p.add_argument("--m", type=positive_int(1_000), default=20, help="neurons per net (default 20, App. F)")
    p.add_argument("--n", type=positive_int(1_000_000), default=10_000, help="samples per source (default 10000)")
    p.add_argument("--steps", type=positive_int(200), default=8,
                   help="sampler steps = nets per activation - 1 (default 8)")
    p.add_argument("--t-min", type=DIFFUSION_TIME, default=0.1, help="last grid time, Tweedie there (default 0.1)")
    p.add_argument("--exact-t-min", type=DIFFUSION_TIME, default=1e-3,
                   help="t_min of the extra exact-score row (default 1e-3)")
    p.add_argument("--empirical-t-min", type=DIFFUSION_TIME, default=1e-4,
                   help="t_min of the extra empirical-score row (default 1e-4)")
    p.add_argument("--process", choices=[q.value for q in Process], default="sde",
                   help="reverse SDE or probability-flow ODE (default sde)")
    p.add_argument("--activations", nargs="+", default=list(ACTS), choices=list(ACTIVATIONS),
                   help="per-patch net activations (default: all four)")
    p.add_argument("--joint-activations", nargs="*", default=["relu"], choices=list(ACTIVATIONS),
                   help="joint net activations (default relu; none: no joint nets)")
    p.add_argument("--epochs", type=positive_int(100_000), default=5000, help="exact GD epochs, per-patch (5000)")
    p.add_argument("--joint-epochs", type=positive_int(100_000), default=2000, help="exact GD epochs, joint (2000)")
    p.add_argument("--n-train", type=positive_int(100_000), default=100,
                   help="training points of the empirical score (default 100)")
    p.add_argument("--delta", type=POSITIVE, default=0.01, help="'within delta of a training point' (default 0.01)")
    p.add_argument("--n-boot", type=positive_int(10_000), default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--n-psi", type=positive_int(1_000_000), default=20_000,
                   help="fresh x_t per grid time for the Monte Carlo E (default 20000)")
    p.add_argument("--zeta", default="uniform:0.2:0.8", help="zeta distribution (default uniform:0.2:0.8)")
    p.add_argument("--seed", type=SEED, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=positive_int(64), default=min(2, os.cpu_count() or 1),
                   help="processes for the exact training (default min(2, CPU count))")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_args(args):
    for name in ("activations", "joint_activations"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise ValueError(f"--{name.replace('_', '-')} has repeated values: {values}")
    if args.n < 10:
        raise ValueError(f"--n must be >= 10 for a fit, got {args.n}")
    for name in ("t_min", "exact_t_min", "empirical_t_min"):
        if getattr(args, name) >= DEFAULT_T_MAX:
            raise ValueError(f"--{name.replace('_', '-')} must be < T = ln 100 = {DEFAULT_T_MAX:.4f}")
    zeta = parse_zeta(args.zeta)
    config = SamplerConfig(process=args.process, steps=args.steps, t_min=args.t_min)
    return zeta, config


def _train(args, zeta, grid) -> tuple[dict, float]:
    """{(kind, activation): [nets at the grid times]} by exact GD on the consistent loss, and the seconds."""
    cfgs = [TrainConfig(activation=a, t=float(t), d=args.d, m=args.m, zeta=zeta, target="score", estimator="exact",
                        epochs=args.epochs, seed=args.seed, device=args.device) for a in args.activations for t in grid]
    cfgs += [TrainConfig(activation=a, t=float(t), d=args.d, m=args.m, zeta=zeta, target="score", estimator="exact",
                         architecture="joint", epochs=args.joint_epochs, seed=args.seed, device=args.device)
             for a in args.joint_activations for t in grid]
    t0 = time.perf_counter()
    try:
        results = train_many(cfgs, progress=not args.no_progress, workers=args.workers)
    except TrainingDiverged as err:
        raise ValueError(f"{err}: raise --t-min (default step sizes are stable for t >= 0.1)") from err
    nets: dict = {}
    for res in results:
        nets.setdefault((res.config.architecture, res.config.activation), []).append(res.net)
    return nets, time.perf_counter() - t0


def _exact_error(kind, zeta, t) -> RuleError | None:
    """E of Def 4.3 in closed form for the marginal score (separable floor) and the exact score (0); None otherwise
    (nets: the Monte Carlo E at every grid time, exact only at t_min, see ``_net_exact``: exact ReLU moments
    cost ~2 s per net)."""
    if kind == "marginal":
        return separable_floor(zeta, *ou_schedule(t))
    if kind == "true":
        return RuleError(0.0, 0.0, 0.0)
    return None


def _net_exact(kind, source, t) -> dict:
    """Exact E (``population_rule_error``) of the net used at t, for the net rows."""
    if kind not in ("per_patch", "joint"):
        return {}
    err = population_rule_error(source.net_at(t)[0], source.data, *ou_schedule(t))
    return {"E_exact_at_t_min": err.total, "E_exact_variance_at_t_min": err.variance}


def _by_t(kind, activation, source, ab, grid, args, zeta) -> list[dict]:
    """Score-level E (Monte Carlo; exact where available) and sample metrics (no bootstrap) at each grid time."""
    out = []
    for k, t in enumerate(grid):
        mc = source_rule_error(source, float(t), n=args.n_psi, seed=args.seed + 7)
        exact = _exact_error(kind, zeta, float(t))
        err = exact if exact is not None else mc
        pred_mean, pred_sd = predicted_rule_residual(err, float(t))
        rec = {"score": kind, "activation": activation, "t": float(t), "E": err.total, "E_bias": err.bias,
               "E_variance": err.variance, "E_source": "exact" if exact is not None else "monte carlo",
               "E_mc": mc.total, "E_mc_se": mc.total_se, "sqrt_E_variance": float(np.sqrt(err.variance)),
               "predicted_residual_mean": pred_mean, "predicted_residual_sd": pred_sd}
        m = sample_metrics(ab[k, 0], ab[k, 1], zeta, n_boot=0, seed=args.seed)
        rec.update({key: getattr(m, key) for key in BY_T_SAMPLE_KEYS}, fit_note=m.fit_note)
        out.append(rec)
    return out


def _sources(args, data, nets, grid):
    """(kind, activation, target, source, t_min) of every row."""
    rows = [("true", None, None, TrueScore(data, args.device), args.t_min)]
    rows += [("per_patch", a, "score", NetGridScore(data, nets[("per_patch", a)], grid, args.device), args.t_min)
             for a in args.activations]
    rows += [("joint", a, "score", NetGridScore(data, nets[("joint", a)], grid, args.device), args.t_min)
             for a in args.joint_activations]
    train_x0 = data.sample_x0(args.n_train, np.random.default_rng(args.seed + 3))
    empirical = EmpiricalScore(data, train_x0, args.device)
    rows += [("marginal", None, None, MarginalScore(data, args.device), args.t_min),
             ("empirical", None, None, empirical, args.t_min),
             ("true", None, None, TrueScore(data, args.device), args.exact_t_min),
             ("empirical", None, None, empirical, args.empirical_t_min)]
    return rows, train_x0


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_sources(args, data, zeta, config, nets, grid) -> tuple[list, list, list]:
    """(rows, by_t, samples): every source sampled, then read at t_min (with CIs) and at every grid time."""
    sources, train_x0 = _sources(args, data, nets, grid)
    train_ab = (train_x0[:, 0] @ data.u, train_x0[:, 1] @ data.v)
    rows, by_t, samples = [], [], []
    for kind, act, target, source, t_min in sources:
        t0 = time.perf_counter()
        cfg = config if t_min == config.t_min else SamplerConfig(config.process, config.steps, t_min, config.t_max)
        ab = sample_rule_coordinates(source, args.n, cfg, seed=args.seed)
        m = sample_metrics(ab[0, 0], ab[0, 1], zeta, n_boot=args.n_boot, seed=args.seed,
                           train_ab=train_ab if kind == "empirical" else None, delta=args.delta)
        on_grid = t_min == config.t_min
        recs = _by_t(kind, act, source, ab, cfg.grid, args, zeta) if on_grid else []
        for r in recs:
            r["target"] = target
        by_t += recs
        at_min = recs[0] if recs else None
        if at_min is None:  # the extra rows: E at their own t_min only
            at_min = _by_t(kind, act, source, ab[:1], cfg.grid[:1], args, zeta)[0]
        row = {"score": kind, "activation": act, "target": target, "t_min": t_min, "n": m.n, **m.as_dict(),
               "E_at_t_min": at_min["E"], "E_variance_at_t_min": at_min["E_variance"],
               "E_bias_at_t_min": at_min["E_bias"], "E_source": at_min["E_source"],
               "predicted_residual_mean": at_min["predicted_residual_mean"],
               "predicted_residual_sd": at_min["predicted_residual_sd"],
               "E_integrated": float(np.trapezoid([r["E"] for r in recs], [r["t"] for r in recs])) if recs else None,
               **_net_exact(kind, source, t_min), "seconds": time.perf_counter() - t0}
        rows.append(row)
        samples.append((kind, act, t_min, ab[0]))
        print(f"{kind:<9} {act or '-':<9} t_min={t_min:<6g} slope {_f(m.slope)} R^2 {_f(m.r2)} Error {_f(m.error)} "
              f"(var {_f(m.error_variance)}) corr {m.corr:+.3f}+-{m.corr_se:.3f} E(t_min) {at_min['E']:.4g} "
              f"[{row['seconds']:.1f} s]", flush=True)
    return rows, by_t, samples


def tracking(by_t) -> dict:
    """Does sqrt(E_variance) track Error's variance part (across activations and t)? Over the net rows' grid points
    (where a fit exists): Pearson and Spearman correlations of sqrt(E_variance) with Error's variance part and with
    the residual sd, and per net the ranges over t of sqrt(E_variance), Error's variance part and the measured
    residual sd over its prediction from E (``predicted_rule_residual``)."""
    from scipy import stats

    pts = [r for r in by_t if r["score"] in ("per_patch", "joint") and r["error_variance"] is not None]
    out: dict = {"n_points": len(pts)}
    if len(pts) >= 3:
        s = np.array([r["sqrt_E_variance"] for r in pts])
        for key in ("error_variance", "residual_sd"):
            v = np.array([r[key] for r in pts])
            out[key] = {"pearson": float(stats.pearsonr(s, v)[0]), "spearman": float(stats.spearmanr(s, v)[0])}
    per_net = {}
    for key in dict.fromkeys((r["score"], r["activation"]) for r in pts):
        rs = [r for r in pts if (r["score"], r["activation"]) == key]
        ratio = [r["residual_sd"] / r["predicted_residual_sd"] for r in rs if r["predicted_residual_sd"] > 0]
        per_net[f"{key[0]} {key[1]}"] = {
            "sqrt_E_variance": [min(r["sqrt_E_variance"] for r in rs), max(r["sqrt_E_variance"] for r in rs)],
            "error_variance": [min(r["error_variance"] for r in rs), max(r["error_variance"] for r in rs)],
            "residual_sd_over_predicted": [min(ratio), max(ratio)] if ratio else None}
    out["per_net_ranges_over_t"] = per_net
    return out


def _label(kind, act, t_min) -> str:
    return f"{kind}{'' if act is None else ' ' + act} (t_min={t_min:g})"


def plot(rows, by_t, samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 4
    nrows = -(-len(samples) // ncols) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (kind, act, t_min, ab), row in zip(axes.ravel(), samples, rows):
        a, y = ab[0][:2000], 1.0 - ab[1][:2000]
        ax.scatter(a, y, s=2, alpha=0.4)
        lo, hi = float(min(a.min(), y.min())), float(max(a.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="rule y = x")
        if row["slope"] is not None:
            ax.plot([lo, hi], [row["slope"] * lo + row["intercept"], row["slope"] * hi + row["intercept"]], "r-",
                    lw=1, label="fit")
        ax.set_title(f"{_label(kind, act, t_min)}\nR$^2$={_f(row['r2'])}, Error={_f(row['error'])}", fontsize=8)
        ax.set_xlabel(r"x = $\langle\hat x^{(1)}, u\rangle$", fontsize=8)
        ax.set_ylabel(r"y = 1 - $\langle\hat x^{(2)}, v\rangle$", fontsize=8)
    for ax in list(axes.ravel()[len(samples):(nrows - 1) * ncols]) + list(axes[-1, 3:]):
        ax.axis("off")
    ax_e, ax_err, ax_cmp = axes[-1, 0], axes[-1, 1], axes[-1, 2]
    for i, key in enumerate(dict.fromkeys((r["score"], r["activation"]) for r in by_t)):
        pts = [r for r in by_t if (r["score"], r["activation"]) == key]
        label, color = key[0] + ("" if key[1] is None else " " + key[1]), f"C{i % 10}"
        ts = [r["t"] for r in pts]
        if any(r["E"] > 0 for r in pts):  # the exact score's E = 0 has no place on a log axis
            ax_e.plot(ts, [max(r["E"], 1e-300) for r in pts], "o-", ms=3, color=color, label=label)
        ax_err.plot(ts, [np.nan if r["error"] is None else r["error"] for r in pts], "o-", ms=3, color=color,
                    label=label)
        if key[0] in ("per_patch", "joint"):
            ax_cmp.plot([r["sqrt_E_variance"] for r in pts],
                        [np.nan if r["error_variance"] is None else r["error_variance"] for r in pts], "o", ms=3,
                        color=color, label=label)
    ax_e.set(xscale="log", yscale="log", xlabel="t", ylabel="E (Def 4.3)", title="score level: E(t)")
    ax_err.set(xscale="log", xlabel="t_min = t", ylabel="Error eq. (4)", title="sample level: Error at t_min = t")
    ax_cmp.set(xscale="log", xlabel=r"$\sqrt{E_{variance}}$", ylabel="Error's variance part",
               title="nets, every grid time")
    for ax in (ax_e, ax_err, ax_cmp):
        ax.legend(fontsize=6)
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def _csv_bytes(samples) -> bytes:
    buf = io.StringIO()
    buf.write("score,activation,t_min,a,b\n")
    for kind, act, t_min, ab in samples:
        prefix = f"{kind},{act or ''},{t_min:g},"
        buf.writelines(f"{prefix}{a:.7g},{b:.7g}\n" for a, b in zip(ab[0], ab[1]))
    return buf.getvalue().encode()


NOTES = {
    "targets": "Nets are trained on the consistent loss (target -eps/beta: s ~ grad log p_t). A net trained on "
               "eq. (2) as printed (target eps) approximates -beta_t times the score (its per-patch optimum is -beta "
               "times the marginal score): plugged into the sampler it points away from the data, so its samples "
               "are not samples of the model at all; none is sampled here.",
    "grid": "One net per sampler grid time, used at that time only (NetGridScore, no interpolation).",
    "tweedie": "Samples are Tweedie outputs D(x_t_min, t_min) = E[x_0 | x_t_min] under the source: at t_min = 0.1 "
               "the posterior of zeta has sd beta/(alpha sqrt 2) ~ 0.34, so a is shrunk toward E[zeta] even for the "
               "exact score (KS, W1 of a against D_zeta measure that); the extra rows at smaller t_min show it vanish.",
    "identity": "For a Tweedie sample a + b - 1 = (beta^2/alpha)(psi_t - alpha/beta^2) at t_min (Def 4.3): the exact "
                "and the empirical score give a + b = 1 to rounding (identity (*); a convex combination of "
                "training points), whatever the sampler's error.",
}


def run(args) -> int:
    zeta, config = _check_args(args)
    paths = prepare_outputs(args.out, NAMES, args.overwrite)
    t_start = time.perf_counter()
    data = MultiPatchData(args.d, zeta)
    grid = config.grid
    nets, train_seconds = _train(args, zeta, grid)
    print(f"trained {sum(len(v) for v in nets.values())} nets (exact GD, {args.workers} worker(s)) in "
          f"{train_seconds:.1f} s", flush=True)
    t0 = time.perf_counter()
    rows, by_t, samples = run_sources(args, data, zeta, config, nets, grid)
    seconds = {"training": train_seconds, "sampling_and_metrics": time.perf_counter() - t0}
    png, pdf, js, csv_path = paths
    fig = plot(rows, by_t, samples)
    save_figure(fig, png)
    save_figure(fig, pdf)
    atomic_write_bytes(csv_path, _csv_bytes(samples))
    seconds["total"] = time.perf_counter() - t_start
    seconds.update(cpu_seconds())
    write_json(js, {
        "figure": "theory samples (beyond the paper)",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "sampler": config.describe(), "grid": grid.tolist(), "zeta": zeta.describe(),
        "reading": "x = a = <x1_hat, u>, y = 1 - b, b = <x2_hat, v>, k = 1; trimmed fit (2.5, 97.5) on y/x as "
                   "Section 3; residual = (a + b - 1)/sqrt(2)",
        "notes": NOTES, "tracking": tracking(by_t),
        "seconds": seconds, "cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "rows": rows, "by_t": by_t,
    })
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    print(f"total {seconds['total']:.1f} s (load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":  # python -m paper_figs.theory_samples ...: the verb 'theory-samples' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb("theory-samples"))
