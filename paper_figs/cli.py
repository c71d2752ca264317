"""The ``hidden-rules`` command line: one verb per figure, table or tool.

Each verb lives in its own module, imported only when the verb is run, which exposes
``add_arguments(parser)`` and ``run(args) -> int``. To add a verb, add one line to ``VERBS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "figure6": ("paper_figs.figure6", "Figure 6: psi_t histograms of trained two-layer score networks"),
    "figure3": ("paper_figs.figure3", "Figure 3: the rule evaluator on each task's training data"),
    "data": ("empirics.cli", "Synthetic Tasks A-D (App. C): write a PNG folder and/or .npz"),
    "eval": ("empirics.cli", "Evaluate images of a task: rows per image and summary.json"),
    "train": ("empirics.ddpm_cli", "Train (or resume) a DDPM on a task (Section 3.2, App. D.1) in a run folder"),
    "sample": ("empirics.ddpm_cli", "Sample a trained run: ancestral DDPM or DDIM, one seed per sample"),
    "table1": ("paper_figs.table1", "Table 1: Invalid % and coarse violations of DDPM samples, over run folders"),
    "figure4": ("paper_figs.figure4", "Figure 4: DDPM samples against the fine rule (fit, R^2, Error eq. (4))"),
    "figure5": ("paper_figs.figure5", "Figures 5 and 11: rule-conforming samples and memorization"),
    "ddpm-curves": ("paper_figs.ddpm_curves", "Invalid % and coarse violations vs training steps and sampling steps"),
    "bounds": ("paper_figs.bounds_cli", "Thm 4.5 exactly: stationary points, GD limit, C0, C1"),
    "appendix-a": ("paper_figs.appendix_a", "App. A: FID 0 yet a different rule (Gaussian mixture)"),
    "rule-floor": ("paper_figs.rule_floor", "Beyond the paper: rule error vs t, per-patch/joint nets, separable floor"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hidden-rules",
        description="Theory, exact training and benchmarks for 'Can Diffusion Models Learn Hidden "
        "Inter-Feature Rules Behind Images?' (ICML 2025).",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Build only the requested verb's parser when possible (keeps start-up fast).
    if argv and argv[0] in VERBS:
        module_name, help_text = VERBS[argv[0]]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"hidden-rules {argv[0]}", description=help_text)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except ValueError as exc:
            parser.exit(2, f"hidden-rules {argv[0]}: error: {exc}\n")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
