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
    "classifier": ("empirics.mitigation_cli", "Train a run's guidance classifier on App. G.1's contrastive data"),
    "filter": ("empirics.mitigation_cli", "Train a run's filter classifier (App. G.2: mlp, resnet8, unet_encoder)"),
    "table2": ("paper_figs.table2", "Table 2: Error and R^2 of DDPM, guidance, filtering and an oracle filter"),
    "table1": ("paper_figs.table1", "Table 1: Invalid %% and coarse violations of DDPM samples, over run folders"),
    "figure4": ("paper_figs.figure4", "Figure 4: DDPM samples against the fine rule (fit, R^2, Error eq. (4))"),
    "figure5": ("paper_figs.figure5", "Figures 5 and 11: rule-conforming samples and memorization"),
    "marginals": ("paper_figs.marginals", "Marginal fidelity of DDPM samples beside Table 1 (background, colours, "
                  "W1/KS, training support, rule inside it), each beside fresh renders"),
    "ddpm-curves": ("paper_figs.ddpm_curves", "Invalid %% and coarse violations vs training steps and sampling steps"),
    "bounds": ("paper_figs.bounds_cli", "Thm 4.5 exactly: stationary points, GD limit, C0, C1"),
    "appendix-a": ("paper_figs.appendix_a", "App. A: FID 0 yet a different rule (Gaussian mixture)"),
    "rule-floor": ("paper_figs.rule_floor", "Beyond the paper: rule error vs t, per-patch/joint nets, separable floor"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hidden-rules")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hidden-rules",
        description="Theory, exact training and benchmarks for 'Can Diffusion Models Learn Hidden "
        "Inter-Feature Rules Behind Images?' (ICML 2025).",
        epilog="Run 'hidden-rules VERB --help' for a verb's options. Add --debug to any command to see the "
        "full traceback of an error.",
    )
    parser.add_argument("--version", action="version", version=f"hidden-rules {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text.replace("%%", "%"))
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def _fail(verb: str, code: int, message: str) -> int:
    print(f"hidden-rules {verb}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Exit status: 0 done, 2 bad arguments or unusable input, 1 a failure while running
    (for example a diverged training), 130 interrupted. Errors are one line on stderr; ``--debug``
    shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in VERBS:
        parser = build_parser()
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        parser.parse_args(argv)  # --help / --version exit 0, an unknown verb exits 2
        return 2  # pragma: no cover - parse_args always exits here
    verb = argv[0]
    module_name, help_text = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"hidden-rules {verb}", description=help_text.replace("%%", "%"))
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail(verb, 130, "interrupted")
    except ValueError as exc:  # bad arguments or unusable input
        if debug:
            raise
        parser.exit(2, f"hidden-rules {verb}: error: {exc}\n")
    except (RuntimeError, ArithmeticError, OSError, MemoryError) as exc:  # failed while running
        if debug:
            raise
        return _fail(verb, 1, f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
