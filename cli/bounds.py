"""`hidden-rules bounds`: Thm 4.5 for linear activation and m = 1, exactly.

Prints, for each t (OU schedule, App. F) and loss target, every stationary point of each patch's
loss (invariants <w, f>^2 and ||w||^2, Hessian eigenvalues, nature), the one gradient descent
reaches from a small random initialisation, C0 = |E_bias| and C1 = E_variance there (Def 4.3), the
same quantities as App. E prints them, the Bayes-optimal rule error of the loss and the separable
floor. ``--json PATH`` also writes every number. All values come from ``theory.bounds`` (closed
forms proven equal to the sympy derivation) and ``derivations.paper_app_e`` (the printed formulas).

``--t`` is checked up front against ``cli.types.T_RANGE``: below it the separable floor's quadrature needs more
memory than a machine has (t = 1e-10: about 215 GiB) and beta**2 underflows (t = 1e-300); above it
alpha = e^-t is so small that the floor's fixed point does not converge (t = 20) and alpha underflows
to 0 (t = 1e308).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.types import DIFFUSION_TIME, OUTPUT_FILE, T_RANGE
from empirics.atomic import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zeta", default="uniform:0.2:0.8", help="zeta distribution (default uniform:0.2:0.8)")
    p.add_argument("--t", type=DIFFUSION_TIME, nargs="+", default=[0.4],
                   help=f"diffusion times in [{T_RANGE[0]:g}, {T_RANGE[1]:g}], OU schedule (default 0.4)")
    p.add_argument("--target", choices=("paper", "score", "both"), default="paper",
                   help="eq. (2) as printed ('paper'), consistent DSM ('score') or both (default paper)")
    p.add_argument("--json", default=None, type=OUTPUT_FILE,
                   help="also write all numbers to this JSON file (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def paper_printed_values(zeta, alpha: float, beta: float) -> dict:
    """App. E's printed ||w||^2 (both signs), <w, u>^2 and C0, evaluated as printed (may be complex)."""
    import sympy as sp

    from derivations import paper_app_e as P

    out = {}
    m1, m2 = zeta.mean, zeta.moment(2)
    second = (m2, zeta.mixed_moment(0, 2))
    for sign, expr in (("+", P.NORM_SQ_PLUS), ("-", P.NORM_SQ_MINUS)):
        norms = [complex(sp.N(expr.subs({P.alpha: alpha, P.beta: beta, P.c2: c2}))) for c2 in second]
        projs = [complex(sp.N(P.PROJ_SQ.subs({P.alpha: alpha, P.beta: beta, P.c2: c2, P.N: n})))
                 for c2, n in zip(second, norms)]
        c0 = complex(sp.N(P.C0_LINE3.subs({P.alpha: alpha, P.beta: beta, P.m1: m1, P.m2: m2,
                                            P.N1: norms[0], P.N2: norms[1]})))
        out[sign] = {"norm_sq": norms, "proj_sq": projs, "C0": abs(c0) if abs(c0.imag) < 1e-12 else c0}
    return out


def _fmt(z) -> str:
    z = complex(z)
    return f"{z.real:.6g}" if abs(z.imag) < 1e-12 else f"{z.real:.4g}{z.imag:+.4g}i"


def _num(z):
    """A JSON value: a float when real, else {"re": ..., "im": ...}."""
    z = complex(z)
    return z.real if abs(z.imag) < 1e-12 else {"re": z.real, "im": z.imag}


def _report(zeta, spec: str, t: float, target: str, floor) -> dict:
    from theory.bounds import bayes_optimal_rule_error, linear_rule_error, linear_stationary_points
    from theory.schedules import ou_schedule

    alpha, beta = ou_schedule(t)
    rec = {"t": t, "alpha": alpha, "beta": beta, "rule_value": alpha / beta**2, "target": target,
           "zeta": zeta.describe(), "stationary_points": []}
    print(f"\n== t = {t:g} (alpha = {alpha:.6g}, beta = {beta:.6g}, alpha/beta^2 = {alpha / beta**2:.6g}), "
          f"target = {target}, zeta = {spec}")
    for pts in linear_stationary_points(zeta, alpha, beta, target):
        for q in pts:
            rec["stationary_points"].append({**q.as_dict(), "patch": q.patch + 1})  # 1, 2 as x^(1), x^(2)
            mark = "  <- GD from small init" if q.reached_by_gd else ""
            h = ", ".join(f"{e:.4g}" for e in q.hessian_in_plane)
            print(f"  patch {q.patch + 1} {q.kind:<10} <w,f>^2 = {q.proj_sq:<10.6g} "
                  f"||w||^2 = {q.norm_sq:<10.6g} Hessian (in plane: {h}; "
                  f"transverse: {q.hessian_transverse:.4g}) {q.nature}{mark}")
    try:
        err = linear_rule_error(zeta, alpha, beta, target)
    except ValueError as exc:
        print(f"  GD limit not determined: {exc}")
        rec["rule_error"] = None
    else:
        rec["rule_error"] = err.as_dict()
        rec["C0"], rec["C1"] = abs(err.bias), err.variance
        print(f"  C0 = |E_bias| = {abs(err.bias):.6g} (bias {err.bias:+.6g}),  "
              f"C1 = E_variance = {err.variance:.6g},  E = {err.total:.6g}")
    bayes = bayes_optimal_rule_error(alpha, beta, target)
    rec["bayes_optimal"] = bayes.as_dict()
    rec["separable_floor"] = floor.as_dict()
    print(f"  Bayes-optimal network of this loss: bias {bayes.bias:.3g}, variance {bayes.variance:.6g}")
    print(f"  separable floor (per-patch marginal scores): bias 0, variance {floor.variance:.6g}")
    if target == "paper":
        printed = paper_printed_values(zeta, alpha, beta)
        rec["app_e_as_printed"] = {sign: {k: [_num(v) for v in vs] if isinstance(vs, list) else _num(vs)
                                          for k, vs in d.items()} for sign, d in printed.items()}
        for sign, d in printed.items():
            print(f"  App. E as printed ({sign} root): ||w||^2 = {', '.join(map(_fmt, d['norm_sq']))}; "
                  f"<w,u>^2 = {', '.join(map(_fmt, d['proj_sq']))}; C0 = {_fmt(d['C0'])}")
    return rec


def run(args) -> int:
    # imported here, not at the top: a bad flag is refused while parsing, before the theory's imports
    from theory.bounds import separable_floor
    from theory.schedules import ou_schedule
    from theory.zeta import parse_zeta

    try:
        zeta = parse_zeta(args.zeta)
    except ValueError as exc:
        raise ValueError(f"--zeta: {exc}") from exc
    upper = float(zeta.hi)
    if upper > 1:
        print(f"warning: --zeta {args.zeta} reaches {upper:g} > 1; Def 4.1's patches x^(1) = zeta u and "
              "x^(2) = (1 - zeta) v then have a negative coefficient and the rule's premise (norms summing to 1) "
              "fails (derivations/ERRATA.md)", file=sys.stderr)
    targets = ("paper", "score") if args.target == "both" else (args.target,)
    if args.json is not None and Path(args.json).exists() and not args.overwrite:
        raise ValueError(f"output file exists: {args.json}; pass --overwrite to replace it")
    records = []
    for t in args.t:
        floor = separable_floor(zeta, *ou_schedule(t))
        records += [_report(zeta, args.zeta, t, target, floor) for target in targets]
    if args.json is not None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, {"command": "bounds", "records": records})
        print(f"\nwrote {args.json}")
    return 0

