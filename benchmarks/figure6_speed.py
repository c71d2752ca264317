"""Figure 6 training cost: exact population GD (theory.exact_gd) vs App. F's Monte Carlo GD, per epoch.

App. F trains on a Monte Carlo loss of n = 1000 data x n_eps = 1000 noise draws (1e6 samples per patch),
d = 100, m = 20, for 5000 epochs, 16 times (32 with both loss targets). This script measures, in one run:

* the per-epoch time (loss + gradient + update) of ``exact_gradient_descent`` for one network of each
  activation at App. F size (t = 0.4, default initialisation), and of all 32 Figure 6 configurations batched;
* the per-epoch time of ``MonteCarloLoss.value_and_grad`` at App. F size in float32 and float64 (the sample
  set is drawn once and excluded from the timing), and the ratio Monte Carlo / exact per activation;
* with ``--trainings``: the wall time of the 32 Figure 6 trainings x 5000 epochs on the exact loss in this
  process (one thread), and the process's peak resident memory at that point (before any Monte Carlo
  sample set is allocated);
* with ``--joint`` (beyond the paper): an exact epoch of ``JointTwoLayerScore`` (``exact_gradient_descent(...,
  joint=True)``, same d, m, t, step size, init std 1/sqrt(2d)) beside an exact per-patch epoch, one network of
  each activation, alternating the two over ``--repeats`` rounds; the ratio joint / per-patch of the best
  (least disturbed) wall and CPU times per activation, written with ``--json`` (docs/figure6_speed_joint.json);
* with ``--figure6``: the wall time of the whole ``hidden-rules figure6`` command (its defaults: exact
  loss, App. F sizes, both targets, training in 2 processes, psi histograms, PNG/PDF/JSON/CSV), run as a
  subprocess, and its peak memory: the largest sum of the resident sets of the command and its worker
  processes, sampled every 50 ms from /proc.

With ``--baseline PATH`` (a checkout of another version of the package, e.g. ``git worktree add PATH REV``)
it compares the exact path of the two versions instead: ``--repeats`` rounds, each timing both versions in
fresh subprocesses (``PYTHONPATH`` set to each tree) in alternating order, so that a shared, noisy CPU loads
both alike; it prints the ratio this tree / baseline per measurement (median and range of the per-round
ratios, and the ratio of the best times, the least disturbed estimate on a loaded machine).

The CPU may be shared: the load average is printed with the numbers. Run:
``python benchmarks/figure6_speed.py [--trainings] [--figure6] [--skip-mc] [--json out.json]``
``python benchmarks/figure6_speed.py --baseline PATH [--repeats 5] [--exact-epochs 300]``
``python benchmarks/figure6_speed.py --joint [--repeats 3] --json docs/figure6_speed_joint.json``
(``make bench`` runs it with ``--figure6``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import theory
from theory import MultiPatchData, Uniform, ou_schedule
from theory.losses import MonteCarloLoss
from theory.network import JointTwoLayerScore, TwoLayerScore, default_init_std
from theory.train import DEFAULT_LR

try:
    from theory.exact_gd import exact_gradient_descent
except ImportError:  # a --baseline tree from before the module was named exact_gd
    from theory.reduced import exact_gradient_descent

ACTS = ("relu", "linear", "quadratic", "cubic")
TIMES = (0.2, 0.4, 0.6, 0.8)
LR = DEFAULT_LR  # theory.train's step sizes (the paper gives none)
D, M, N, N_EPS = 100, 20, 1000, 1000


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc; 0 where unreadable)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def time_figure6_command() -> dict:
    """Wall time and peak tree memory of ``hidden-rules figure6`` with its defaults, in a fresh process."""
    exe = Path(sys.executable).with_name("hidden-rules")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "paper_figs.cli"]
    with tempfile.TemporaryDirectory() as out:
        cmd = [*cmd, "figure6", "--out", out, "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_bytes(proc.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        output = proc.stdout.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    trained = next((line for line in output.splitlines() if line.startswith("trained ")), "")
    return {"command": " ".join(cmd[:2]), "seconds": wall, "peak_tree_rss_gib": peak / 2**30, "trained": trained}


def init_weights(activation: str, seed: int = 0) -> torch.Tensor:
    return TwoLayerScore(D, M, activation, init_std=default_init_std(D), seed=seed).weights.detach()


def exact_per_epoch(activation: str, epochs: int, data: MultiPatchData) -> float:
    alpha, beta = ou_schedule(0.4)
    res = exact_gradient_descent(init_weights(activation), activation, data, [alpha], [beta], "paper",
                                 LR[("paper", activation)], epochs=epochs, log_every=epochs)
    return res.seconds / (epochs + 1)


BATCH_TIMES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # a lock-step batch of 8 nets, as train_many runs them


def arch_epoch(activation: str, epochs: int, data: MultiPatchData, joint: bool, batch: bool) -> tuple[float, float]:
    """(wall, CPU) seconds per exact GD epoch at App. F size, printed loss: one net at t = 0.4, or (``batch``)
    8 nets at ``BATCH_TIMES`` in lock step; per-patch (eq. (1)) or joint (beyond the paper, init std 1/sqrt(2d))."""
    from theory.population import joint_blocks

    times = BATCH_TIMES if batch else (0.4,)
    alphas, betas = zip(*(ou_schedule(t) for t in times))
    if joint:
        W = torch.cat([JointTwoLayerScore(D, M, activation, init_std=default_init_std(2 * D), seed=s).weights.detach()
                       for s in range(len(times))])
        W = joint_blocks(W, data.n_patches)
    else:
        W = torch.stack([init_weights(activation, seed=s) for s in range(len(times))])
    cpu = time.process_time()
    res = exact_gradient_descent(W, activation, data, list(alphas), list(betas), "paper", LR[("paper", activation)],
                                 epochs=epochs, log_every=epochs, joint=joint)
    return res.seconds / (epochs + 1), (time.process_time() - cpu) / (epochs + 1)


def joint_against_per_patch(epochs: int, repeats: int) -> dict:
    """Exact joint vs exact per-patch epoch per activation, one net and a batch of 8, alternating the two
    architectures over ``repeats`` rounds; ratios joint / per-patch of the best wall and the best CPU time
    (the best is what a shared CPU disturbs least)."""
    data = MultiPatchData(D, Uniform(0.2, 0.8))
    out = {"d": D, "m": M, "target": "paper", "one_net_t": 0.4, "batch_times": BATCH_TIMES, "epochs": epochs,
           "repeats": repeats, "load_average_start": os.getloadavg(), "per_activation": {}}
    for act in ACTS:
        rec = {}
        for size in ("one", "batch8"):
            runs = {"per_patch": [], "joint": []}
            for r in range(repeats):
                for arch in (("per_patch", "joint") if r % 2 == 0 else ("joint", "per_patch")):
                    runs[arch].append(arch_epoch(act, epochs, data, arch == "joint", size == "batch8"))
            best = {arch: (min(w for w, _ in v), min(c for _, c in v)) for arch, v in runs.items()}
            rec[size] = {"per_patch_ms": best["per_patch"][0] * 1e3, "joint_ms": best["joint"][0] * 1e3,
                         "per_patch_cpu_ms": best["per_patch"][1] * 1e3, "joint_cpu_ms": best["joint"][1] * 1e3,
                         "ratio_wall": best["joint"][0] / best["per_patch"][0],
                         "ratio_cpu": best["joint"][1] / best["per_patch"][1],
                         "runs_ms_wall_cpu": {a: [[w * 1e3, c * 1e3] for w, c in v] for a, v in runs.items()}}
            x = rec[size]
            print(f"exact epoch {act:9s} {size:6s}: per-patch {x['per_patch_ms']:.3f} ms (CPU "
                  f"{x['per_patch_cpu_ms']:.3f}), joint {x['joint_ms']:.3f} ms (CPU {x['joint_cpu_ms']:.3f}); "
                  f"joint / per-patch {x['ratio_wall']:.2f} (CPU {x['ratio_cpu']:.2f})", flush=True)
        out["per_activation"][act] = rec
    out["within_3x_cpu"] = {f"{act}/{size}": r[size]["ratio_cpu"] <= 3 for act, r in out["per_activation"].items()
                            for size in r}
    out["load_average_end"] = os.getloadavg()
    return out


def figure6_configs():
    W0, acts, alphas, betas, targets, lrs = [], [], [], [], [], []
    for target in ("paper", "score"):
        for act in ACTS:
            for t in TIMES:
                a, b = ou_schedule(t)
                W0.append(init_weights(act))
                acts.append(act)
                alphas.append(a)
                betas.append(b)
                targets.append(target)
                lrs.append(LR[(target, act)])
    return torch.stack(W0), acts, alphas, betas, targets, lrs


def mc_per_epoch(dtype, epochs: int, data: MultiPatchData) -> dict:
    alpha, beta = ou_schedule(0.4)
    t0 = time.perf_counter()
    mc = MonteCarloLoss(data, alpha, beta, n=N, n_eps=N_EPS, target="paper", seed=1, dtype=dtype,
                        device="cpu")
    draw = time.perf_counter() - t0
    out = {"draw_seconds": draw}
    for act in ACTS:
        W = init_weights(act)
        mc.value_and_grad(W, act)  # warm-up
        t0 = time.perf_counter()
        for _ in range(epochs):
            _, g = mc.value_and_grad(W, act)
            W = W - LR[("paper", act)] * g
        out[act] = (time.perf_counter() - t0) / epochs
    del mc
    return out


def exact_timings(epochs: int) -> dict:
    """Per-epoch seconds of the exact path: one net per activation, and the 32 Figure 6 configs batched; wall
    time, and (``_cpu``) this process's CPU time, which a shared CPU disturbs less (the loop is one thread)."""
    data = MultiPatchData(D, Uniform(0.2, 0.8))
    out = {}
    for act in ACTS:
        cpu = time.process_time()
        out[act] = exact_per_epoch(act, epochs, data)
        out[f"{act}_cpu"] = (time.process_time() - cpu) / (epochs + 1)
    W0, acts, alphas, betas, targets, lrs = figure6_configs()
    cpu = time.process_time()
    res = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lrs, epochs=epochs, log_every=epochs,
                                 on_divergence="freeze")
    out["figure6_batch_cpu"] = (time.process_time() - cpu) / (epochs + 1)
    out["figure6_batch"] = res.seconds / (epochs + 1)
    return out


def compare_with_baseline(baseline: str, repeats: int, epochs: int) -> dict:
    """``exact_timings`` of this tree and of ``baseline``, in fresh subprocesses, alternating order."""
    trees = {"this": str(Path(__file__).resolve().parents[1]), "baseline": str(Path(baseline).resolve())}
    runs: dict = {name: [] for name in trees}
    for r in range(repeats):
        for name in (("this", "baseline") if r % 2 == 0 else ("baseline", "this")):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "t.json"
                env = {**os.environ, "PYTHONPATH": trees[name]}
                subprocess.run([sys.executable, __file__, "--exact-only", "--exact-epochs", str(epochs),
                                "--json", str(out)], env=env, check=True, cwd=trees[name])
                got = json.loads(out.read_text())
            if not got["theory"].startswith(trees[name]):
                raise RuntimeError(f"{name}: imported theory from {got['theory']}, not {trees[name]}")
            runs[name].append(got["exact"])
            print(f"round {r + 1}/{repeats} {name:8s}: " + ", ".join(
                f"{k} {v * 1e3:.3f}" for k, v in got["exact"].items()) + " ms/epoch", flush=True)
    report = {"trees": trees, "repeats": repeats, "epochs": epochs, "runs": runs, "ratio": {}}
    pairs = list(zip(runs["this"], runs["baseline"]))
    def value(r, key):  # one timing, or the sum of the wall ("sum") or CPU ("sum_cpu") timings
        if key.startswith("sum"):
            return sum(v for k, v in r.items() if k.endswith("_cpu") == (key == "sum_cpu"))
        return r[key]

    for key in [*runs["this"][0], "sum", "sum_cpu"]:
        ratios = [value(a, key) / value(b, key) for a, b in pairs]
        best = [min(value(r, key) for r in runs[name]) for name in trees]
        report["ratio"][key] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                "of_best": best[0] / best[1]}
        print(f"this / baseline {key:14s}: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-"
              f"{max(ratios):.3f} over {repeats} rounds); best time / best time {best[0] / best[1]:.3f}")
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exact-epochs", type=int, default=300, help="epochs timed per activation (exact)")
    p.add_argument("--mc-epochs", type=int, default=2, help="epochs timed per activation and dtype (MC)")
    p.add_argument("--trainings", action="store_true", help="also run 32 trainings x 5000 epochs")
    p.add_argument("--figure6", action="store_true", help="also time the whole `hidden-rules figure6` command")
    p.add_argument("--skip-mc", action="store_true", help="skip Monte Carlo (~1.6 GiB of samples)")
    p.add_argument("--json", default=None, help="write the numbers to this file")
    p.add_argument("--baseline", default=None, help="compare the exact path with the package tree at this path")
    p.add_argument("--repeats", type=int, default=5, help="rounds of the --baseline comparison")
    p.add_argument("--exact-only", action="store_true", help="only the exact timings (used by --baseline)")
    p.add_argument("--joint", action="store_true", help="only the exact joint vs per-patch epoch (beyond the paper)")
    args = p.parse_args(argv)
    if args.joint:
        report = {"torch": torch.__version__, "cpus": os.cpu_count(), "threads": 1,
                  "theory": str(Path(theory.__file__).resolve()),
                  "joint": joint_against_per_patch(args.exact_epochs, args.repeats)}
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=1)
        return report
    if args.baseline or args.exact_only:
        report = (compare_with_baseline(args.baseline, args.repeats, args.exact_epochs) if args.baseline else
                  {"theory": str(Path(theory.__file__).resolve()), "exact": exact_timings(args.exact_epochs),
                   "load_average": os.getloadavg()})
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=1)
        return report
    data = MultiPatchData(D, Uniform(0.2, 0.8))
    report = {"torch": torch.__version__, "cpus": os.cpu_count(), "threads_mc": torch.get_num_threads(),
              "threads_exact": 1, "load_average_start": os.getloadavg(), "exact": {}, "mc": {}}
    print(f"App. F size: d={D}, m={M}, n={N}, n_eps={N_EPS}; load average {os.getloadavg()}")

    for act in ACTS:
        report["exact"][act] = exact_per_epoch(act, args.exact_epochs, data)
        print(f"exact  {act:9s}: {report['exact'][act] * 1e3:8.3f} ms/epoch (1 network)")
    W0, acts, alphas, betas, targets, lrs = figure6_configs()
    res = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lrs, epochs=args.exact_epochs,
                                 log_every=args.exact_epochs, on_divergence="freeze")
    report["exact"]["figure6_batch_per_epoch"] = res.seconds / (args.exact_epochs + 1)
    print(f"exact  all 32 configs batched: {report['exact']['figure6_batch_per_epoch'] * 1e3:.2f} ms/epoch "
          f"({report['exact']['figure6_batch_per_epoch'] / 32 * 1e3:.3f} ms per network-epoch, 1 process)")

    if args.trainings:
        t0 = time.perf_counter()
        res = exact_gradient_descent(W0, acts, data, alphas, betas, targets, lrs, epochs=5000, log_every=100,
                                     on_divergence="freeze")
        wall = time.perf_counter() - t0
        report["figure6_trainings"] = {"configs": len(acts), "epochs": 5000, "seconds": wall,
                                       "peak_rss_gib": peak_rss_gib(), "diverged": res.diverged,
                                       "final_grad_norm": res.history["grad_norm"][:, -1].tolist()}
        print(f"exact  32 trainings x 5000 epochs: {wall:.1f} s wall, peak RSS {peak_rss_gib():.2f} GiB, "
              f"diverged: {res.diverged or 'none'}")

    if args.figure6:
        report["figure6_command"] = time_figure6_command()
        f6 = report["figure6_command"]
        print(f"hidden-rules figure6 (defaults): {f6['seconds']:.1f} s wall, peak memory "
              f"{f6['peak_tree_rss_gib']:.2f} GiB (all its processes); {f6['trained']}")

    if not args.skip_mc:
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            report["mc"][name] = mc_per_epoch(dtype, args.mc_epochs, data)
            for act in ACTS:
                t = report["mc"][name][act]
                ratio = t / report["exact"][act]
                print(f"MC {name} {act:9s}: {t:8.3f} s/epoch   ratio MC/exact = {ratio:9.0f}")
        report["ratio"] = {name: {act: report["mc"][name][act] / report["exact"][act] for act in ACTS}
                           for name in report["mc"]}
        per_net = report["exact"]["figure6_batch_per_epoch"] / len(acts)
        mean_mc = {name: sum(report["mc"][name][a] for a in ACTS) / len(ACTS) for name in report["mc"]}
        report["ratio_figure6_batch"] = {name: mean_mc[name] / per_net for name in mean_mc}
        print("Figure 6 batch: MC epoch (mean over activations) / exact network-epoch = "
              + ", ".join(f"{name} {r:.0f}" for name, r in report["ratio_figure6_batch"].items()))
    report["peak_rss_gib_end"] = peak_rss_gib()
    report["load_average_end"] = os.getloadavg()
    print(f"load average at the end {os.getloadavg()}; peak RSS {report['peak_rss_gib_end']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
