"""Reverse-time sampling of the multi-patch model (Def 4.1) with any score (beyond the paper).

The paper measures its theory at the score level (Def 4.3's E) and images at the sample level (Error,
eq. (4)); it never samples the multi-patch model. This module does, with App. F's OU schedule
alpha_t = e^{-t}, beta_t = sqrt(1 - e^{-2t}) (forward dx = -x dt + sqrt(2) dW):

* reverse SDE  dx = [-x - 2 s(x, t)] dt + sqrt(2) dW-bar,  probability-flow ODE  dx/dt = -x - s(x, t);
* every source is read as a denoiser D(x, t) = (x + beta_t^2 s(x, t)) / alpha_t (Tweedie: E[x_0 | x_t] for
  the exact score), so s = (alpha_t D - x) / beta_t^2;
* a geometric grid t_0 = t_min < t_1 < ... < t_N = T with alpha_T <= 1e-2 (default T = ln 100), started
  from N(0, I) (the OU limit; the true x_T has mean alpha_T x_0, a shift <= 1e-2 |x_0|);
* ``method="exponential"`` (default): D frozen at the step's upper end, the linear part solved exactly:
  the ODE step is DDIM, x_s = alpha_s D + beta_s (x - alpha_t D) / beta_t; the SDE step draws from the
  Gaussian q(x_s | x_t, x_0 = D) (the ancestral step; first-order DPM-Solver++ SDE). Both are exact for a
  point-mass data law (D constant). ``method="euler"``: Euler(-Maruyama) on the same grid, for comparison;
* Tweedie's denoising at the end: the returned samples are D(x_{t_min}, t_min).

Score sources (``ScoreSource.denoise``): ``TrueScore`` (Thm 4.2), ``NetGridScore`` (eq. (1) per-patch or
joint nets, one per grid time), ``MarginalScore`` (each patch's marginal score: the loss-optimal per-patch
score, the separable optimum of ``theory.bounds.separable_floor``), ``EmpiricalScore`` (the exact score of
the empirical law of n training points, a Gaussian mixture, which memorizes).

Structural fact: a per-patch source's D^(p) depends on x^(p) alone, and the noise of the two patches is
independent, so x^(1) and x^(2) move independently: samples of ``NetGridScore`` with per-patch nets and of
``MarginalScore`` have independent <x^(1), u>, <x^(2), v>. Batched, float64, device="auto"; seeded through a
``torch.Generator`` (or an explicit ``noise`` callable).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from ._checks import DTYPE, check_choice, check_instance, check_int, check_real, resolve_device
from .data import MultiPatchData, check_data
from .network import TwoLayerScore
from .rule import RuleError
from .schedules import ou_schedule
from .score import true_score

DEFAULT_T_MAX = math.log(100.0)  # alpha_T = 1e-2
METHODS = ("exponential", "euler")


class Process(Enum):
    """Which reverse-time process: the reverse SDE or the probability-flow ODE."""

    SDE = "sde"
    ODE = "ode"

    @classmethod
    def parse(cls, value) -> Process:
        if isinstance(value, cls):
            return value
        check_choice("process", value, [p.value for p in cls])
        return cls(value)


def time_grid(t_min: float, steps: int, t_max: float = DEFAULT_T_MAX) -> np.ndarray:
    """Geometric grid t_0 = t_min < ... < t_steps = t_max (float64, steps + 1 points)."""
    t_min = check_real("t_min", t_min, positive=True)
    t_max = check_real("t_max", t_max, positive=True)
    steps = check_int("steps", steps)
    if not t_min < t_max:
        raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if math.exp(-t_max) > 1e-2 + 1e-15:
        raise ValueError(f"t_max must give alpha_T = e^-T <= 1e-2 (T >= ln 100 = {DEFAULT_T_MAX:.4f}), got {t_max}")
    return t_min * (t_max / t_min) ** (np.arange(steps + 1) / steps)


# ---- score sources ----------------------------------------------------------------------------------------
class ScoreSource(ABC):
    """A score s(x, t) of the multi-patch model, read as the denoiser D = (x + beta^2 s) / alpha."""

    kind: str  # "true", "per_patch", "joint", "marginal" or "empirical"

    def __init__(self, data: MultiPatchData, device="auto"):
        self.data = check_data(data)
        self.device = resolve_device(device)
        self.u = torch.as_tensor(data.u, dtype=DTYPE, device=self.device)
        self.v = torch.as_tensor(data.v, dtype=DTYPE, device=self.device)

    @abstractmethod
    def denoise(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """D(x, t), shape (n, P, d), for x of shape (n, P, d) on ``self.device``."""

    def score(self, x: torch.Tensor, t: float) -> torch.Tensor:
        alpha, beta = ou_schedule(t)
        return (alpha * self.denoise(x, t) - x) / beta**2

    def psi(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Def 4.3's psi_t = <s^(1) + x^(1)/beta^2, u> + <s^(2) + x^(2)/beta^2, v>
        = (alpha/beta^2)(<D^(1), u> + <D^(2), v>)."""
        alpha, beta = ou_schedule(t)
        D = self.denoise(x, t)
        return (alpha / beta**2) * (D[:, 0] @ self.u + D[:, 1] @ self.v)

    def _rest(self, x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """E[x_0^(p) | x_t^(p)] = alpha x / (alpha^2 + beta^2) for the N(0, I) patches p >= 3 of ``MultiPatchData``."""
        return alpha * x[:, 2:] / (alpha**2 + beta**2)


class TrueScore(ScoreSource):
    """Thm 4.2's exact score (``theory.score.true_score``)."""

    kind = "true"

    def denoise(self, x, t):
        alpha, beta = ou_schedule(t)
        return (x + beta**2 * true_score(x, self.data, alpha, beta)) / alpha


class MarginalScore(ScoreSource):
    """Each patch's own marginal score: D^(1) = E[zeta | <x^(1), u>] u, D^(2) = E[1 - zeta | <x^(2), v>] v.

    The loss-optimal per-patch score (what eq. (1) nets approach on the consistent loss); its psi_t has the
    separable floor's E (``theory.bounds.separable_floor``). Patch 1's likelihood in zeta has mode a/alpha,
    patch 2's mode 1 - b/alpha, both sd beta/alpha.
    """

    kind = "marginal"

    def denoise(self, x, t):
        alpha, beta = ou_schedule(t)
        a, b = x[:, 0] @ self.u, x[:, 1] @ self.v
        _, m1 = self.data.zeta.gaussian_tilt(a / alpha, beta / alpha)
        _, m2 = self.data.zeta.gaussian_tilt(1.0 - b / alpha, beta / alpha)
        D = torch.empty_like(x)
        D[:, 0] = m1[:, None] * self.u
        D[:, 1] = (1.0 - m2)[:, None] * self.v
        if self.data.n_patches > 2:
            D[:, 2:] = self._rest(x, alpha, beta)
        return D


class EmpiricalScore(ScoreSource):
    """The exact score of the empirical law of training points x_0^i (n_train, P, d): a Gaussian mixture,

    p_t = (1/n) sum_i N(alpha x_0^i, beta^2 I),  D(x, t) = sum_i w_i(x) x_0^i,  w = softmax(<x, alpha x_0^i>/beta^2
    - alpha^2 |x_0^i|^2 / (2 beta^2)). As t -> 0 the weights concentrate on the nearest point: it memorizes.
    """

    kind = "empirical"

    def __init__(self, data: MultiPatchData, train_x0, device="auto"):
        super().__init__(data, device)
        x0 = torch.as_tensor(data.check_x(train_x0, "train_x0"), dtype=DTYPE, device=self.device)
        self.train_x0 = x0.reshape(x0.shape[0], -1)
        self.half_sq = 0.5 * (self.train_x0**2).sum(1)

    def denoise(self, x, t):
        alpha, beta = ou_schedule(t)
        flat = x.reshape(x.shape[0], -1)
        logits = (alpha * flat @ self.train_x0.T - alpha**2 * self.half_sq[None]) / beta**2
        w = torch.softmax(logits, dim=1)
        return (w @ self.train_x0).reshape(x.shape)


class NetGridScore(ScoreSource):
    """eq. (1) nets (or ``JointTwoLayerScore`` nets), one trained at each grid time: D = beta_k^2 g_k(x) / alpha_k.

    The net of the grid time nearest in log t is used (no interpolation). The ``theory-samples`` verb trains
    one net at each time the sampler evaluates, so the nearest net is the net of that very time; interpolating
    the weights of nets trained separately has no meaning, and blending two denoisers mixes two nets' errors
    into a score neither net has. ``max_log_gap`` (default 1e-9) bounds |log t - log t_k| and refuses a
    query between grid times, so a mismatch cannot pass silently; pass ``math.inf`` to allow nearest-net use.
    """

    def __init__(self, data: MultiPatchData, nets, times, device="auto", max_log_gap: float = 1e-9):
        super().__init__(data, device)
        nets, times = list(nets), np.asarray(times, dtype=np.float64)
        if len(nets) == 0 or len(nets) != times.size:
            raise ValueError(f"need one net per grid time, got {len(nets)} nets and {times.size} times")
        if not np.all(np.isfinite(times)) or np.any(times <= 0):
            raise ValueError("times must be finite and > 0")
        for i, net in enumerate(nets):
            check_instance(f"nets[{i}]", net, TwoLayerScore)
            if net.d != data.d or net.n_patches != data.n_patches:
                raise ValueError(f"nets[{i}] (d={net.d}, n_patches={net.n_patches}) does not fit data "
                                 f"(d={data.d}, n_patches={data.n_patches})")
        if len({net.joint for net in nets}) != 1:
            raise ValueError("nets must be all per-patch or all joint")
        self.kind = "joint" if nets[0].joint else "per_patch"
        self.nets = [TwoLayerScore.from_weights(n.weights.detach(), n.activation) if not n.joint else
                     type(n).from_weights(n.weights.detach(), n.activation, n_patches=n.n_patches) for n in nets]
        for n in self.nets:
            n.to(self.device)
        self.log_times = np.log(times)
        self.max_log_gap = float(max_log_gap) if max_log_gap == math.inf else check_real("max_log_gap", max_log_gap,
                                                                                           nonneg=True)

    def net_at(self, t: float) -> tuple[TwoLayerScore, float]:
        gaps = np.abs(self.log_times - math.log(t))
        k = int(np.argmin(gaps))
        if gaps[k] > self.max_log_gap:
            raise ValueError(f"no net trained at t={t:g} (nearest grid time {math.exp(self.log_times[k]):g}); "
                             "train one per sampler time or raise max_log_gap")
        return self.nets[k], float(math.exp(self.log_times[k]))

    def denoise(self, x, t):
        net, t_k = self.net_at(t)
        alpha, beta = ou_schedule(t_k)
        with torch.no_grad():
            return beta**2 * net.residual(x) / alpha


# ---- the sampler -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerConfig:
    """Reverse-time sampling settings; ``steps`` intervals of the geometric grid from ``t_max`` to ``t_min``."""

    process: str = "ode"
    steps: int = 8
    t_min: float = 0.1
    t_max: float = DEFAULT_T_MAX
    method: str = "exponential"

    def __post_init__(self):
        Process.parse(self.process)
        check_choice("method", self.method, METHODS)
        time_grid(self.t_min, self.steps, self.t_max)

    @property
    def grid(self) -> np.ndarray:
        return time_grid(self.t_min, self.steps, self.t_max)

    def describe(self) -> dict:
        return {"process": Process.parse(self.process).value, "steps": self.steps, "t_min": self.t_min,
                "t_max": self.t_max, "method": self.method, "start": "N(0, I)", "end": "Tweedie D(x, t_min)"}


Noise = Callable[[int, tuple], torch.Tensor]


def _step(D, x, t: float, s: float, process: Process, method: str, z):
    """One step from t down to s < t given D = D(x, t) (z: standard normal noise, used by the SDE)."""
    a_t, b_t = ou_schedule(t)
    a_s, b_s = ou_schedule(s)
    if method == "euler":
        h = t - s
        score = (a_t * D - x) / b_t**2
        if process is Process.ODE:
            return x + h * (x + score)
        return x + h * (x + 2 * score) + math.sqrt(2 * h) * z
    if process is Process.ODE:  # DDIM: exact flow of the linear ODE with D frozen
        return a_s * D + (b_s / b_t) * (x - a_t * D)
    a_ts = a_t / a_s
    b_ts2 = -math.expm1(-2.0 * (t - s))  # 1 - a_ts^2
    mean = (a_s * b_ts2 / b_t**2) * D + (a_ts * b_s**2 / b_t**2) * x
    return mean + math.sqrt(b_s**2 * b_ts2 / b_t**2) * z


def reverse_sample(source: ScoreSource, n: int, config: SamplerConfig = SamplerConfig(), seed: int = 0,
                   noise: Noise | None = None, batch: int = 20_000, on_grid=None) -> torch.Tensor:
    """n samples x_0-hat (n, P, d), float64 on ``source.device``: reverse-time integration, then Tweedie.

    ``noise(k, shape)`` returns the standard normal draws: k = 0 the start x_T, k >= 1 the SDE increment of step
    k (steps counted from T); default: a ``torch.Generator`` seeded with ``seed`` (CPU, so results do not depend
    on the device). Batches of ``batch`` samples run one after the other (each with its own slice of the noise
    stream when ``noise`` is None). ``on_grid(k, t_k, D, start)``, if given, sees the Tweedie output D(x_{t_k}, t_k)
    of the rows ``start:start + len(D)`` at every grid time (k = steps ... 0): what sampling with t_min = t_k would
    return for the same noise (the geometric grid from T to t_k has the same points).
    """
    check_instance("source", source, ScoreSource)
    check_instance("config", config, SamplerConfig)
    n, batch = check_int("n", n), check_int("batch", batch)
    seed = check_int("seed", seed, minimum=0)
    process = Process.parse(config.process)
    grid = config.grid
    data = source.data
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)

    def default_noise(k, shape):
        return torch.randn(shape, generator=gen, dtype=DTYPE)

    draw = default_noise if noise is None else noise
    out = []
    for start in range(0, n, batch):
        shape = (min(batch, n - start), data.n_patches, data.d)
        x = torch.as_tensor(draw(0, shape), dtype=DTYPE).to(source.device)
        for k in range(config.steps, 0, -1):
            z = torch.as_tensor(draw(config.steps - k + 1, shape), dtype=DTYPE).to(source.device) \
                if process is Process.SDE else None
            D = source.denoise(x, float(grid[k]))
            if on_grid is not None:
                on_grid(k, float(grid[k]), D, start)
            x = _step(D, x, float(grid[k]), float(grid[k - 1]), process, config.method, z)
        D = source.denoise(x, float(grid[0]))
        if on_grid is not None:
            on_grid(0, float(grid[0]), D, start)
        out.append(D)
    return torch.cat(out)


def rule_coordinates(samples, data: MultiPatchData) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) = (<x^(1), u>, <x^(2), v>) of samples (n, P, d), as numpy float64."""
    x = torch.as_tensor(samples, dtype=DTYPE)
    u = torch.as_tensor(data.u, dtype=DTYPE, device=x.device)
    v = torch.as_tensor(data.v, dtype=DTYPE, device=x.device)
    return (x[:, 0] @ u).cpu().numpy(), (x[:, 1] @ v).cpu().numpy()


def source_rule_error(source: ScoreSource, t: float, n: int = 20_000, seed: int = 0):
    """Monte Carlo Def 4.3 of any source at time t over n fresh x_t ~ p_t: ``RuleError`` with standard errors.

    psi_t is read from the denoiser, psi = (alpha/beta^2)(<D^(1), u> + <D^(2), v>) (Def 4.3 of
    s = (alpha D - x)/beta^2).
    """
    check_instance("source", source, ScoreSource)
    t = check_real("t", t, positive=True)
    n = check_int("n", n, minimum=2)
    alpha, beta = ou_schedule(t)
    x = torch.as_tensor(source.data.sample_xt(n, alpha, beta, np.random.default_rng(seed)), dtype=DTYPE,
                        device=source.device)
    p = source.psi(x, t).cpu().numpy()
    mean, var = float(p.mean()), float(p.var(ddof=1))
    c = p - mean
    m3, m4 = float(np.mean(c**3)), float(np.mean(c**4))
    bias = mean - alpha / beta**2
    total_var = (4 * bias**2 * var + (m4 - var**2) + 4 * bias * m3) / n
    return RuleError(bias=bias, variance=var, total=bias**2 + var, bias_se=math.sqrt(var / n),
                     variance_se=math.sqrt(max(m4 - var**2, 0.0) / n), total_se=math.sqrt(max(total_var, 0.0)), n=n)


def sample_rule_coordinates(source: ScoreSource, n: int, config: SamplerConfig = SamplerConfig(), seed: int = 0,
                            batch: int = 20_000) -> np.ndarray:
    """(a, b) of the Tweedie output at every grid time: array (steps + 1, 2, n), index k = grid index (k = 0 is
    t_min, the samples ``reverse_sample`` returns); row k is what sampling down to t_min = t_k gives."""
    check_instance("config", config, SamplerConfig)
    out = np.empty((config.steps + 1, 2, check_int("n", n)))

    def record(k, t, D, start):
        out[k, 0, start:start + D.shape[0]] = (D[:, 0] @ source.u).cpu().numpy()
        out[k, 1, start:start + D.shape[0]] = (D[:, 1] @ source.v).cpu().numpy()

    reverse_sample(source, n, config, seed=seed, batch=batch, on_grid=record)
    return out


def predicted_rule_residual(error: RuleError, t: float) -> tuple[float, float]:
    """(mean, sd) of the orthogonal residual (a + b - 1)/sqrt(2) of Tweedie samples at t if x_t ~ p_t.

    With D the denoiser, a + b = (beta^2/alpha) psi_t(x_t) (Def 4.3), so
    a + b - 1 = (beta^2/alpha)(psi_t - alpha/beta^2):
    mean (beta^2/alpha) bias / sqrt(2), sd (beta^2/alpha) sqrt(E_variance) / sqrt(2). Samples from an imperfect score
    are not x_t ~ p_t; the gap between this prediction and the measured residual is that difference.
    """
    check_instance("error", error, RuleError)
    alpha, beta = ou_schedule(check_real("t", t, positive=True))
    scale = beta**2 / alpha / math.sqrt(2.0)
    return scale * error.bias, scale * math.sqrt(max(error.variance, 0.0))


__all__ = ["Process", "SamplerConfig", "ScoreSource", "TrueScore", "MarginalScore", "EmpiricalScore", "NetGridScore",
           "time_grid", "reverse_sample",
           "sample_rule_coordinates", "predicted_rule_residual", "rule_coordinates", "source_rule_error",
           "DEFAULT_T_MAX", "METHODS"]
