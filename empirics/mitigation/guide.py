"""Classifier guidance toward the fine rule (Dhariwal & Nichol 2021; Section 5, App. G.1).

:class:`GuidanceSchedule` (constant, or App. G.1's piecewise ramp over the last 20 steps) and
:class:`ClassifierGuide` plug into :func:`empirics.ddpm.sample_images`, which applies the gradient
of log p(y = 1 | x_t, t) as :func:`empirics.ddpm.reverse_step` describes.

Where we differ from the text, and why:
* The piecewise schedule's ramp is scale * j / k at the j-th of the last k steps (j = 1..k): "activated
  only in the final 20 denoising steps" with every one of them active and the full scale at the last.
* Ancestral DDPM uses diffusers' fixed_small posterior variance, which is 0 at the last step (t = 0 ->
  x_0), so that step is unguided; Dhariwal & Nichol's code clips that variance to beta~_1 instead.
* DDIM adds the score form's displacement to diffusers' unguided step instead of handing eps_hat to
  the scheduler, whose clip of x0 would otherwise turn the guidance around (``empirics.ddpm.reverse_step``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

from empirics._checks import check_choice, check_int, check_real
from empirics.mitigation.classifier import (
    N_CLASSES,
    RULE_CLASS,
    TimeConditionedClassifier,
    check_classifier,
    classifier_logits,
    module_device,
)
from empirics.tasks import Task

__all__ = ["GuidanceKind", "GuidanceSchedule", "default_scale", "paper_schedule", "ClassifierGuide"]


# ----------------------------------------------------------------------------------------------
# Guidance (Dhariwal & Nichol 2021; Section 5, App. G.1)


class GuidanceKind(str, enum.Enum):
    """How the guidance scale varies over the sampling steps (App. G.1)."""

    CONSTANT = "constant"  # the scale at every step ("standard weighting")
    PIECEWISE = "piecewise"  # 0, then a linear ramp to the scale over the last k steps


# App. G.1: gradient scales and the better of the two schedules per task.
_PAPER_SCALE = {Task.A: 7.0, Task.B: 10.0, Task.C: 7.0, Task.D: 10.0}
_PAPER_KIND = {Task.A: GuidanceKind.CONSTANT, Task.B: GuidanceKind.CONSTANT, Task.C: GuidanceKind.PIECEWISE,
               Task.D: GuidanceKind.CONSTANT}


def default_scale(task) -> float:
    """App. G.1's gradient scale: 7 for Tasks A and C, 10 for B and D."""
    return _PAPER_SCALE[Task.parse(task)]


@dataclass(frozen=True)
class GuidanceSchedule:
    """The guidance scale s_i of sampling step i (App. G.1).

    ``constant``: s_i = ``scale``. ``piecewise``: s_i = 0 before the last ``last_k`` steps and
    ``scale`` * j / k at the j-th of them (j = 1..k), so every one of the last k steps is guided and the
    last gets the full scale. ``last_k`` must not exceed the number of sampling steps, checked by
    :meth:`scales` when sampling starts.
    """

    kind: GuidanceKind = GuidanceKind.CONSTANT
    scale: float = 1.0
    last_k: int = 20

    def __post_init__(self):
        object.__setattr__(self, "kind", check_choice("kind", self.kind, GuidanceKind))
        object.__setattr__(self, "scale", check_real("scale", self.scale))
        object.__setattr__(self, "last_k", check_int("last_k", self.last_k, 1))

    def scales(self, n_steps: int) -> np.ndarray:
        """s_i for i = 0 (first sampling step) .. n_steps - 1 (last)."""
        n_steps = check_int("n_steps", n_steps, 1)
        if self.kind is GuidanceKind.CONSTANT:
            return np.full(n_steps, self.scale)
        if self.last_k > n_steps:
            raise ValueError(f"the piecewise guidance ramp spans last_k={self.last_k} steps, more than the "
                             f"{n_steps} sampling steps; use last_k <= {n_steps}")
        out = np.zeros(n_steps)
        out[n_steps - self.last_k:] = self.scale * np.arange(1, self.last_k + 1) / self.last_k
        return out


def paper_schedule(task) -> GuidanceSchedule:
    """App. G.1's choice for ``task``: constant for A, B and D, piecewise over the last 20 steps for C."""
    task = Task.parse(task)
    return GuidanceSchedule(_PAPER_KIND[task], _PAPER_SCALE[task], 20)


class ClassifierGuide:
    """Classifier guidance toward class ``target`` for :func:`empirics.ddpm.sample_images` (a ``Guide``).

    ``classifier``: a :class:`TimeConditionedClassifier` or any torch module f(x_t, t) returning
    :class:`ClassifierOutput` or [N, 3] logits.

    ``grad_log_prob(x_t, t)`` = grad_x log softmax(f_theta(x_t, t))[target], by autograd at x_t (as the
    paper does: the classifier sees the current noisy sample, not a denoised estimate). Each sample's
    gradient depends on that sample only (GroupNorm normalises per sample). ``scales(n)`` is the
    schedule's.
    """

    def __init__(self, classifier: TimeConditionedClassifier, schedule: GuidanceSchedule,
                 target: int = RULE_CLASS, source: str | None = None):
        check_classifier(classifier)
        self.source = None if source is None else str(source)     # where the classifier came from (sample.json)
        if not isinstance(schedule, GuidanceSchedule):
            raise ValueError(f"schedule must be a GuidanceSchedule, got {type(schedule).__name__}")
        self.classifier = classifier
        self.schedule = schedule
        self.target = check_int("target", target, 0, N_CLASSES - 1)

    def scales(self, n_steps: int) -> np.ndarray:
        return self.schedule.scales(n_steps)

    @property
    def name(self) -> str:
        """Suffix of a guided sample set's folder, e.g. ``guided-constant-s7`` or ``guided-piecewise-s7-k20``."""
        s = self.schedule
        tail = f"-k{s.last_k}" if s.kind is GuidanceKind.PIECEWISE else ""
        target = "" if self.target == RULE_CLASS else f"-y{self.target}"
        return f"guided-{s.kind.value}-s{s.scale:g}{tail}{target}"

    def describe(self) -> dict:
        """JSON-able record of the guide (``sample.json``)."""
        s = self.schedule
        return {"kind": s.kind.value, "scale": s.scale, "last_k": s.last_k, "target": self.target,
                "classifier": self.source}

    def to(self, device) -> ClassifierGuide:
        self.classifier.to(device)
        return self

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dev = module_device(self.classifier)
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().to(dev).clone().requires_grad_(True)
            logits = classifier_logits(self.classifier(x_in, t.to(dev)))
            log_p = torch.log_softmax(logits.float(), dim=1)[:, self.target].sum()
            (grad,) = torch.autograd.grad(log_p, x_in)
        return grad.to(x.device)

    def __repr__(self) -> str:
        s = self.schedule
        return f"ClassifierGuide(target={self.target}, {s.kind.value}, scale={s.scale:g}, last_k={s.last_k})"
