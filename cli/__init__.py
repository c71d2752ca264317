"""The ``hidden-rules`` command line: every verb registered once, in ``VERBS``, as an
``(add_arguments, run)`` pair.

A verb's functions live in the module its entry names (imported only when the verb is run): the
figure scripts of ``paper_figs`` and this package's modules for the library's verbs. Shared argparse
types (``cli.types``) check every flag while the command line is parsed, before any work.

Failure, the same for every verb: exit status 2 for bad arguments or unusable input, 1 for a failure while
running (for example a diverged training), 130 when interrupted; ONE line on stderr,
``hidden-rules VERB: error: MESSAGE`` (argparse errors too), no traceback (``--debug`` shows it); an output
folder this call created is removed again when the call fails and the folder holds no file.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.types import OutputFolder, created_by_call, holds_no_files


@dataclass(frozen=True)
class Verb:
    """One verb: ``module:add_arguments`` adds its flags, ``module:run(args) -> int`` runs it."""

    module: str
    help: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def functions(self):
        module = importlib.import_module(self.module)
        return getattr(module, self.add_arguments), getattr(module, self.run)


VERBS: dict[str, Verb] = {
    "figure6": Verb("paper_figs.figure6", "Figure 6: psi_t histograms of trained two-layer score networks"),
    "figure3": Verb("paper_figs.figure3", "Figure 3: the rule evaluator on each task's training data"),
    "data": Verb("cli.data_eval", "Synthetic Tasks A-D (App. C): write a PNG folder and/or .npz",
                 "add_data_arguments", "run_data"),
    "eval": Verb("cli.data_eval", "Evaluate images of a task: rows per image and summary.json",
                 "add_eval_arguments", "run_eval"),
    "train": Verb("cli.train_sample", "Train (or resume) a DDPM on a task (Section 3.2, App. D.1) in a run folder",
                  "add_train_arguments", "run_train"),
    "sample": Verb("cli.train_sample", "Sample a trained run: ancestral DDPM, DDIM or DPM-Solver++ (SDE), one seed "
                   "per sample", "add_sample_arguments", "run_sample"),
    "classifier": Verb("cli.classifiers", "Train a run's guidance classifier on App. G.1's contrastive data",
                       "add_classifier_arguments", "run_classifier"),
    "filter": Verb("cli.classifiers", "Train a run's filter classifier (App. G.2: mlp, resnet8, unet_encoder)",
                   "add_filter_arguments", "run_filter"),
    "table2": Verb("paper_figs.table2", "Table 2: Error and R^2 of DDPM, guidance, filtering and an oracle filter"),
    "table1": Verb("paper_figs.table1", "Table 1: Invalid %% and coarse violations of DDPM samples, over run folders"),
    "figure4": Verb("paper_figs.figure4", "Figure 4: DDPM samples against the fine rule (fit, R^2, Error eq. (4))"),
    "figure5": Verb("paper_figs.figure5", "Figures 5 and 11: rule-conforming samples and memorization"),
    "marginals": Verb("paper_figs.marginals", "Marginal fidelity of DDPM samples beside Table 1 (background, "
                      "colours, W1/KS, training support, rule inside it), each beside fresh renders"),
    "ddpm-curves": Verb("paper_figs.ddpm_curves",
                        "Invalid %% and coarse violations vs training steps and sampling steps"),
    "bounds": Verb("cli.bounds", "Thm 4.5 exactly: stationary points, GD limit, C0, C1"),
    "appendix-a": Verb("paper_figs.appendix_a", "App. A: FID 0 yet a different rule (Gaussian mixture)"),
    "rule-floor": Verb("paper_figs.rule_floor",
                       "Beyond the paper: rule error vs t, per-patch/joint nets, separable floor"),
    "joint-width": Verb("paper_figs.joint_width", "Beyond the paper: rule error vs width m, joint vs per-patch nets"),
    "theory-samples": Verb("paper_figs.theory_samples",
                           "Beyond the paper: sample the multi-patch model with each score, Error eq. (4) vs E"),
}

PROG = "hidden-rules"


class Interrupted(Exception):
    """Raised by a verb that caught Ctrl-C and can say what was kept (exit status 130)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line, ``hidden-rules VERB: error: MESSAGE`` (no usage block);
    ``--help`` still prints the usage."""

    def error(self, message: str):
        if message.startswith("argument ") and ": " in message:  # "argument --n: must be >= 1"
            name, rest = message.removeprefix("argument ").split(": ", 1)
            if not name.startswith("-"):  # a positional: the type's message names it or its value
                message = rest
            else:
                flag = name.split("/")[-1]
                message = f"{flag} {rest}" if rest.startswith("must") else f"{flag}: {rest}"
        self.exit(2, f"{self.prog}: error: {message}\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hidden-rules")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "unknown (not installed)"


def verb_parser(verb: str) -> argparse.ArgumentParser:
    spec = VERBS[verb]
    add_arguments, _ = spec.functions()
    parser = OneLineParser(prog=f"{PROG} {verb}", description=spec.help.replace("%%", "%"))
    add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (every verb as a sub-command): ``hidden-rules --help`` and tests."""
    parser = OneLineParser(
        prog=PROG,
        description="Theory, exact training and benchmarks for 'Can Diffusion Models Learn Hidden "
        "Inter-Feature Rules Behind Images?' (ICML 2025).",
        epilog="Run 'hidden-rules VERB --help' for a verb's options. Add --debug to any command to see the "
        "full traceback of an error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    for verb, spec in VERBS.items():
        p = sub.add_parser(verb, help=spec.help, description=spec.help.replace("%%", "%"))
        add_arguments, _ = spec.functions()
        add_arguments(p)
    return parser


def _fail(prog: str, code: int, message: str, kind: str = "error") -> int:
    print(f"{prog}: {kind}: {message}", file=sys.stderr)
    return code


def _output_folders(parser: argparse.ArgumentParser, args) -> list[Path]:
    """The folders and files the call may write, named by flags of an output type."""
    paths = []
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        if isinstance(action.type, OutputFolder) and getattr(args, action.dest, None) is not None:
            paths.append(Path(getattr(args, action.dest)))
    return paths


def _remove_if_empty(created: list[Path]) -> None:
    for folder in created:
        if holds_no_files(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _run(verb: str, parser: argparse.ArgumentParser, args, debug: bool) -> int:
    prog = parser.prog
    _, run = VERBS[verb].functions()
    try:
        return int(run(args) or 0)
    except Interrupted as exc:
        if debug:
            raise
        return _fail(prog, 130, str(exc), "interrupted")
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail(prog, 130, "interrupted")
    except ValueError as exc:  # bad arguments or unusable input
        if debug:
            raise
        parser.exit(2, f"{prog}: error: {exc}\n")
    except (RuntimeError, ArithmeticError, OSError, MemoryError) as exc:  # failed while running
        if debug:
            raise
        return _fail(prog, 1, f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns its exit status, or raises ``SystemExit(2)`` for bad arguments or input
    after printing one line (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in VERBS:
        if argv and argv[0] in ("-h", "--help", "--version"):
            build_parser().parse_args(argv[:1])  # prints and exits 0
        given = f"invalid choice: {argv[0]!r} (" if argv else "a verb is needed ("
        raise SystemExit(_fail(PROG, 2, f"{given}choose from {', '.join(VERBS)}; "
                                        f"'{PROG} --help' says what each does)"))
    verb = argv[0]
    parser = verb_parser(verb)
    args = parser.parse_args(argv[1:])
    created = created_by_call(_output_folders(parser, args))
    status = 1
    try:
        status = _run(verb, parser, args, debug)
    finally:
        if status != 0:
            _remove_if_empty(created)
    return status


def run_verb(verb: str, argv: list[str] | None = None) -> int:
    """``python -m paper_figs.figure6 ...`` as ``hidden-rules figure6 ...``."""
    return main([verb, *(sys.argv[1:] if argv is None else argv)])
