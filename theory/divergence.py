"""When gradient descent has diverged: the one rule and the one exception of both GD paths.

App. F trains by full-batch GD; at a too large step size the loss explodes. Monte Carlo GD
(``theory.train``) and exact GD on the population loss (``theory.exact_gd``) stop, or freeze a
configuration, by the same rule and report it with the same exception.
"""

from __future__ import annotations

import math

import torch

EXPLOSION_FACTOR = 1e6  # a loss above 1e6 (1 + |initial loss|) has exploded


def diverged(loss, grad_norm, first):
    """The divergence rule: a non-finite loss or gradient norm, or |loss| > 1e6 (1 + |first loss|).

    Floats give a bool; tensors (one entry per configuration) give a bool tensor, elementwise.
    """
    if isinstance(loss, torch.Tensor):
        return ~torch.isfinite(loss + grad_norm) | (loss.abs() > EXPLOSION_FACTOR * (1 + first.abs()))
    return not math.isfinite(loss + grad_norm) or abs(loss) > EXPLOSION_FACTOR * (1.0 + abs(first))


class TrainingDiverged(RuntimeError):
    """GD produced a non-finite or exploding loss (``diverged``).

    ``step``: the epoch at which it was detected; ``config``: index of the first diverging configuration
    among those the raising function was given; ``weights``: the last weights at which every loss was finite
    (``exact_gradient_descent``: all configurations (C, P, m, d); ``train``: the diverging net's);
    ``history``: the loss log up to then; ``result``: a ``TrainResult`` of the diverging configuration at
    those weights (``train`` / ``train_many``; None from ``exact_gradient_descent``). Picklable, so it
    crosses the process boundary of ``train_many(workers=...)``.
    """

    def __init__(self, message: str, step: int, config: int = 0, weights=None, history=None, result=None):
        super().__init__(message)
        self.step, self.config, self.weights, self.history, self.result = step, config, weights, history, result

    def __reduce__(self):
        return type(self), (str(self), self.step, self.config, self.weights, self.history, self.result)


__all__ = ["diverged", "TrainingDiverged", "EXPLOSION_FACTOR"]
