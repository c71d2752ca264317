"""App. F's fixed Monte Carlo sample against a fresh sample every epoch: where eq. (2) GD goes (linear, m = 1).

Thm 4.5 (linear sigma, m = 1, eq. (2) as printed) has a closed-form point that gradient descent on the
*population* loss reaches: w aligned with the rule direction u, <w,u>^2 = ||w||^2 = S
(``theory.bounds.linear_stationary_points``); the sphere <w,u> = 0, ||w||^2 = (1+beta)/beta^2 is a
saddle. App. F trains on a Monte Carlo loss drawn once and kept for every epoch. This script trains the
m = 1 linear network (d = 100) by exact population GD, and on the CPU preset's Monte Carlo size
(n = 100 data x n_eps = 10 noise draws) with a fixed sample set and with a fresh one every epoch
(``TrainConfig.resample``), for 5000 (App. F) and 20000 epochs, and records

* <w,u>^2 and ||w||^2 of patch 1 against the GD limit S and the orthogonal sphere, and
* the exact rule error E (Def 4.3, ``population_rule_error``) of the trained network against the
  closed form at the GD limit.

Run: ``python benchmarks/mc_fixed_sample.py [--t 0.6 0.8] [--epochs 5000 20000] [--kinds ...] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from empirics.atomic import write_json
from theory import Uniform, ou_schedule
from theory.bounds import linear_rule_error, linear_stationary_points
from theory.population import population_rule_error
from theory.train import TrainConfig, train

KINDS = ("exact", "mc-fixed", "mc-fresh")


def one(t: float, epochs: int, kind: str, n: int, n_eps: int, seed: int) -> dict:
    t0 = time.perf_counter()
    if kind == "exact":
        cfg = TrainConfig(activation="linear", m=1, t=t, estimator="exact", target="paper", epochs=epochs, seed=seed)
    else:
        cfg = TrainConfig(activation="linear", m=1, t=t, estimator="mc", target="paper", n=n, n_eps=n_eps,
                          epochs=epochs, resample=kind == "mc-fresh", seed=seed)
    res = train(cfg, progress=False)
    w = res.net.weights.detach().cpu().numpy()[0, 0].astype(float)
    data = res.config.data()
    u = np.asarray(data.u, float).reshape(-1)
    alpha, beta = ou_schedule(t)
    err = population_rule_error(res.net, data, alpha, beta)
    return {"t": t, "epochs": epochs, "estimator": kind, "proj_u_sq": float(np.dot(w, u) ** 2),
            "norm_sq": float(w @ w), "outside_u_sq": float(w @ w - np.dot(w, u) ** 2),
            "E": float(err.total), "bias": float(err.bias), "variance": float(err.variance),
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--t", type=float, nargs="+", default=[0.6, 0.8], help="diffusion times (default 0.6 0.8)")
    p.add_argument("--epochs", type=int, nargs="+", default=[5000, 20000], help="GD epochs (default 5000 20000)")
    p.add_argument("--n", type=int, default=100, help="data per sample set (default 100)")
    p.add_argument("--n-eps", type=int, default=10, help="noise draws per datum (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="exact population GD, Monte Carlo with a fixed sample set (App. F), or a fresh one each "
                   "epoch (default: all three)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if min(args.epochs) < 1 or args.n < 1 or args.n_eps < 1:
        raise SystemExit("--epochs, --n and --n-eps must be >= 1")
    zeta = Uniform(0.2, 0.8)
    rows, limits = [], {}
    for t in args.t:
        alpha, beta = ou_schedule(t)
        points = linear_stationary_points(zeta, alpha, beta, "paper")[0]  # patch 1 (feature u)
        gd = next(q for q in points if q.reached_by_gd)
        sphere = next(q.norm_sq for q in points if q.kind == "orthogonal")  # <w,u> = 0, (1+beta)/beta^2
        lim = linear_rule_error(zeta, alpha, beta, "paper")
        limits[str(t)] = {"S": float(gd.proj_sq), "E": float(lim.total), "bias": float(lim.bias),
                          "variance": float(lim.variance), "orthogonal_sphere_norm_sq": float(sphere)}
        for epochs in args.epochs:
            for kind in args.kinds:
                r = one(t, epochs, kind, args.n, args.n_eps, args.seed)
                rows.append(r)
                print(f"t={t} epochs={epochs:6d} {kind:>8}: <w,u>^2 {r['proj_u_sq']:.3f} ||w||^2 {r['norm_sq']:.3f} "
                      f"(GD limit S = {gd.proj_sq:.3f}, orthogonal sphere {sphere:.3f}); E {r['E']:.3f} "
                      f"(limit {lim.total:.3f})  [{r['seconds']:.0f} s]", flush=True)
    if args.json:
        write_json(args.json, {"n": args.n, "n_eps": args.n_eps, "d": 100, "m": 1, "seed": args.seed,
                               "gd_limit": limits, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
