"""Full-batch gradient descent on the DSM loss eq. (2), as in App. F.

``train(TrainConfig(...))`` trains one ``TwoLayerScore`` at one diffusion time t (OU schedule of
App. F) and returns ``TrainResult(net, history)``. Two estimators of the loss:

* ``"mc"``: App. F's Monte Carlo loss over a fixed set of n data x n_eps noise draws
  (``theory.losses.MonteCarloLoss``; ``resample=True`` draws a fresh set every epoch instead,
  the other reading of App. F's 'for each epoch, we sample').
* ``"exact"``: the population loss (``theory.population``), i.e. the n, n_eps -> infinity limit the
  theorems are about, trained in the reduced coordinates of span(initial weights, u, v). Joint nets
  (``architecture="joint"``, beyond the paper) too: their loss (``theory.population.joint``) is a function of
  the patch blocks' Gram matrices and feature projections, so the same coordinates hold block by block;
  they run in their own lock-step batches, so per-patch results do not depend on them.

The paper does not state the learning rate, the initialisation scale or the zeta distribution;
our defaults are in ``TrainConfig`` and are written into every figure's JSON.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ._checks import DTYPE, check_choice, check_instance, check_int, check_real, resolve_device
from .data import MultiPatchData
from .divergence import TrainingDiverged, diverged
from .exact_gd import ExactGDResult, exact_gradient_descent
from .losses import MonteCarloLoss, Target
from .network import ACTIVATIONS, JointTwoLayerScore, TwoLayerScore, default_init_std, get_activation
from .population import joint_blocks, joint_weights
from .schedules import ou_schedule
from .zeta import Uniform, ZetaDistribution, check_zeta

ESTIMATORS = ("mc", "exact")
ARCHITECTURES = ("per_patch", "joint")  # eq. (1), or JointTwoLayerScore (neurons see all patches)

# Step sizes (target, activation): round values for which GD is stable at every t in
# {0.2, ..., 0.8} from our default initialisation (the paper does not give its step size).
DEFAULT_LR = {
    ("paper", "relu"): 3e-2, ("paper", "linear"): 3e-2, ("paper", "quadratic"): 1e-2, ("paper", "cubic"): 1e-2,
    ("score", "relu"): 1e-1, ("score", "linear"): 1e-1, ("score", "quadratic"): 1e-1, ("score", "cubic"): 1e-1,
}


def default_zeta() -> ZetaDistribution:
    """zeta ~ U[0.2, 0.8]: our choice; the paper's App. F does not name D_zeta."""
    return Uniform(0.2, 0.8)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are App. F's sizes (d=100, m=20, n=n_eps=1000, 5000 epochs)."""

    activation: str = "relu"
    t: float = 0.4
    d: int = 100
    m: int = 20
    zeta: ZetaDistribution = field(default_factory=default_zeta)
    target: str = "paper"
    estimator: str = "mc"
    n: int = 1000
    n_eps: int = 1000
    epochs: int = 5000
    lr: float | None = None
    init_std: float | None = None
    seed: int = 0
    mc_dtype: str = "float64"
    resample: bool = False
    device: str = "auto"
    log_every: int = 10
    architecture: str = "per_patch"

    def __post_init__(self):
        get_activation(self.activation)
        check_real("t", self.t, positive=True)
        check_int("d", self.d, minimum=2)
        check_int("m", self.m, minimum=1)
        check_zeta(self.zeta)
        Target.parse(self.target)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_int("n", self.n)
        check_int("n_eps", self.n_eps)
        check_int("epochs", self.epochs, minimum=0)
        if self.lr is not None:
            check_real("lr", self.lr, positive=True)
        if self.init_std is not None:
            check_real("init_std", self.init_std, nonneg=True)
        check_int("seed", self.seed, minimum=0)
        check_choice("mc_dtype", self.mc_dtype, ("float32", "float64"))
        check_int("log_every", self.log_every)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        resolve_device(self.device)

    @property
    def alpha_beta(self) -> tuple[float, float]:
        return ou_schedule(self.t)

    @property
    def step_size(self) -> float:
        return DEFAULT_LR[(Target.parse(self.target).value, self.activation)] if self.lr is None else self.lr

    @property
    def init_scale(self) -> float:
        fan_in = self.d * (2 if self.architecture == "joint" else 1)
        return default_init_std(fan_in) if self.init_std is None else self.init_std

    def data(self) -> MultiPatchData:
        return MultiPatchData(self.d, self.zeta)

    def init_net(self) -> TwoLayerScore:
        _, beta = self.alpha_beta
        cls = JointTwoLayerScore if self.architecture == "joint" else TwoLayerScore
        return cls(self.d, self.m, self.activation, init_std=self.init_scale, beta=beta, seed=self.seed,
                   device=self.device)

    def describe(self) -> dict:
        return {"activation": self.activation, "t": self.t, "d": self.d, "m": self.m,
                "zeta": self.zeta.describe(), "target": Target.parse(self.target).value,
                "estimator": self.estimator, "n": self.n, "n_eps": self.n_eps, "epochs": self.epochs,
                "lr": self.step_size, "init_std": self.init_scale, "seed": self.seed,
                "mc_dtype": self.mc_dtype, "resample": self.resample, "architecture": self.architecture}

    def label(self) -> str:
        arch = ", joint" if self.architecture == "joint" else ""
        return f"{self.activation}, t={self.t:g}, target={Target.parse(self.target).value}{arch}"


@dataclass
class TrainResult:
    """The trained network and its loss history (epochs at which the loss was logged)."""

    net: TwoLayerScore
    history: dict
    config: TrainConfig
    seconds: float = 0.0


def _net_from(config: TrainConfig, W: torch.Tensor) -> TwoLayerScore:
    """The trained network of ``config``'s architecture with weights W."""
    _, beta = config.alpha_beta
    cls = JointTwoLayerScore if config.architecture == "joint" else TwoLayerScore
    return cls.from_weights(W, config.activation, beta=beta, device=config.device)


def _save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic: write a temporary file next to ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, config: TrainConfig) -> dict | None:
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("config") != config.describe():
        raise ValueError(f"checkpoint {path} was written for another config; move it away or use another directory")
    return payload


def checkpoint_path(directory, config: TrainConfig) -> Path:
    """File name of a config's checkpoint inside ``directory``."""
    c = config.describe()
    return Path(directory) / (f"{c['estimator']}_{c['architecture']}_{c['target']}_{c['activation']}_t{c['t']:g}"
                              f"_d{c['d']}_m{c['m']}_s{c['seed']}.pt")


class _Run:
    """State of one config inside a lock-step Monte Carlo group."""

    def __init__(self, config: TrainConfig, checkpoint: Path | None):
        self.config, self.checkpoint = config, checkpoint
        self.net = config.init_net()
        self.W = self.net.weights.detach().clone()
        self.hist = {"epoch": [], "loss": [], "grad_norm": []}
        self.first, self.start, self.done = None, 0, False
        state = _load_checkpoint(checkpoint, config) if checkpoint is not None else None
        if state is not None:
            self.W = state["weights"].to(self.W.device, DTYPE)
            self.hist, self.first, self.start = state["history"], state["first"], state["epoch"]

    def diverged(self, message: str, step: int, index: int) -> TrainingDiverged:
        res = TrainResult(_net_from(self.config, self.W), self.hist, self.config)
        return TrainingDiverged(f"training diverged for ({self.config.label()}) at epoch {step}: {message}; "
                                f"lower lr (now {self.config.step_size:g}) or init_std", step, index,
                                res.net.weights.detach(), self.hist, res)


def _mc_group_key(c: TrainConfig):
    """Configs with equal keys share one Monte Carlo sample set (App. F draws it once per t)."""
    return (c.t, Target.parse(c.target).value, c.n, c.n_eps, c.seed, c.mc_dtype, c.resample, c.d,
            repr(c.zeta.describe()), c.device, c.epochs, c.log_every)


def _train_mc_group(configs: list[TrainConfig], progress: bool, checkpoint_dir=None,
                    checkpoint_every: int = 500) -> list[TrainResult]:
    """GD for configs that share (t, target, sample sizes, seed): one sample set, lock-step epochs."""
    c0 = configs[0]
    alpha, beta = c0.alpha_beta
    dtype = torch.float32 if c0.mc_dtype == "float32" else torch.float64
    mc = MonteCarloLoss(c0.data(), alpha, beta, n=c0.n, n_eps=c0.n_eps, target=c0.target, seed=c0.seed + 1,
                        dtype=dtype, device=c0.device)
    runs = [_Run(c, None if checkpoint_dir is None else checkpoint_path(checkpoint_dir, c)) for c in configs]
    start = min(r.start for r in runs)
    label = c0.label() if len(configs) == 1 else f"t={c0.t:g}, {len(configs)} configs"
    for k in tqdm(range(start, c0.epochs + 1), desc=label, disable=not progress, leave=False):
        if c0.resample and k > 0:
            mc.resample(c0.seed + 1 + k)
        active = [r for r in runs if k >= r.start]
        for r in active:
            if r.checkpoint is not None and k > r.start and (k % checkpoint_every == 0 or k == c0.epochs):
                _save_checkpoint(r.checkpoint, {"config": r.config.describe(), "weights": r.W.cpu(),
                                                "history": r.hist, "first": r.first, "epoch": k})
        evaluated = mc.value_and_grad_many([r.W for r in active], [r.config.activation for r in active],
                                           [r.net.joint for r in active])
        for r, (loss, grad, _) in zip(active, evaluated):
            loss = float(loss)
            r.first = loss if r.first is None else r.first
            gnorm = float(grad.norm())
            if diverged(loss, gnorm, r.first):
                raise r.diverged(f"loss={loss:.4g} (first {r.first:.4g})", k, runs.index(r))
            if k % c0.log_every == 0 or k == c0.epochs:
                r.hist["epoch"].append(k)
                r.hist["loss"].append(loss)
                r.hist["grad_norm"].append(gnorm)
            if k < c0.epochs:
                W_new = r.W - r.config.step_size * grad
                if not bool(torch.isfinite(W_new).all()):
                    raise r.diverged("non-finite weights", k + 1, runs.index(r))
                r.W = W_new
    return [TrainResult(_net_from(r.config, r.W), r.hist, r.config) for r in runs]


def _exact_group_key(c: TrainConfig):
    """Configs with equal keys can share one lock-step batch of exact GD (activation, t, target, lr may differ)."""
    return (c.d, c.m, repr(c.zeta.describe()), c.epochs, c.log_every, c.device, c.architecture)


# Relative cost per config and epoch of a lock-step exact batch (measured: d = 100, m = 20, one thread,
# batches of 8 ReLU / 24 polynomial configs): a ReLU config ~0.2 ms, a polynomial one ~0.1 ms.
_EXACT_COST = {"relu": 2.0}


def _exact_cost(c: TrainConfig) -> float:
    return _EXACT_COST.get(c.activation, 1.0)


def _exact_chunks(configs: list[TrainConfig], workers: int) -> list[list[int]]:
    """Indices of ``configs`` split into lock-step batches: one per group key, each group split into at
    most ``workers`` batches of about equal cost (largest first onto the lightest batch)."""
    groups: dict = {}
    for i, c in enumerate(configs):
        groups.setdefault(_exact_group_key(c), []).append(i)
    chunks = []
    for idx in groups.values():
        k = min(workers, len(idx))
        parts, load = [[] for _ in range(k)], [0.0] * k
        for i in sorted(idx, key=lambda i: -_exact_cost(configs[i])):
            j = load.index(min(load))
            parts[j].append(i)
            load[j] += _exact_cost(configs[i])
        chunks += [sorted(p) for p in parts if p]
    return chunks


def _exact_batch(cs: list[TrainConfig], progress: bool) -> ExactGDResult:
    """Exact GD of one lock-step batch (weights on the CPU); raises ``TrainingDiverged`` as it does.

    A joint batch runs on the patch blocks (C, P, m, d) of the joint weights and returns (C, 1, m, P*d)."""
    W0 = torch.stack([c.init_net().weights.detach() for c in cs])
    joint = cs[0].architecture == "joint"
    P = cs[0].data().n_patches
    alphas, betas = zip(*(c.alpha_beta for c in cs))
    try:
        res = exact_gradient_descent(joint_blocks(W0[:, 0], P) if joint else W0, [c.activation for c in cs],
                                     cs[0].data(), list(alphas), list(betas),
                                     [Target.parse(c.target).value for c in cs], [c.step_size for c in cs],
                                     cs[0].epochs, log_every=cs[0].log_every, progress=progress,
                                     device=cs[0].device, joint=joint)
    except TrainingDiverged as err:
        if joint:
            raise TrainingDiverged(str(err), err.step, err.config, joint_weights(err.weights)[:, None], err.history,
                                   err.result) from err
        raise
    return replace(res, weights=(joint_weights(res.weights)[:, None] if joint else res.weights).cpu())


def _config_history(history: dict, j: int) -> dict:
    """Configuration j's log (lists) from a batch log (``ExactGDResult.history``)."""
    logged = bool(history["epoch"])
    return {"epoch": list(history["epoch"]), "loss": history["loss"][j].tolist() if logged else [],
            "grad_norm": history["grad_norm"][j].tolist() if logged else []}


def _run_exact_batch(configs: list[TrainConfig], idx: list[int], progress: bool) -> ExactGDResult:
    """``_exact_batch`` of ``configs[idx]``; a divergence is re-raised for the config it concerns."""
    try:
        return _exact_batch([configs[i] for i in idx], progress)
    except TrainingDiverged as err:
        i = idx[err.config]
        c, hist = configs[i], _config_history(err.history, err.config)
        partial = TrainResult(_net_from(c, err.weights[err.config].to(resolve_device(c.device))), hist, c)
        raise TrainingDiverged(f"training diverged for ({c.label()}) at epoch {err.step}: {err}", err.step, i,
                               partial.net.weights.detach(), hist, partial) from err


def _train_exact(configs: list[TrainConfig], progress: bool, workers: int = 1) -> list[TrainResult]:
    """The population loss (n, n_eps -> infinity), full-batch GD in span(W(0), u, v) coordinates.

    Same initialisation, step size, logging and divergence rule as the Monte Carlo path; the loss is
    ``theory.population``'s exact expectation, the GD ``theory.exact_gd.exact_gradient_descent``. With
    ``workers`` > 1 (CPU only) the batches run in that many processes at once, the first in this one
    (with the progress bar): the per-step cost is dominated by small tensor operations, so one
    process per core is what uses a second core.
    """
    if workers > 1 and any(resolve_device(c.device).type != "cpu" for c in configs):
        workers = 1  # one device process: batching already fills an accelerator
    chunks = _exact_chunks(configs, workers)
    outs: list = [None] * len(chunks)
    if workers > 1 and len(chunks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(chunks)) - 1 or 1, mp_context=mp.get_context("spawn")) as pool:
            futures = {k: pool.submit(_run_exact_batch, configs, chunks[k], False) for k in range(1, len(chunks))}
            outs[0] = _run_exact_batch(configs, chunks[0], progress)
            for k, fut in futures.items():
                outs[k] = fut.result()
    else:
        outs = [_run_exact_batch(configs, idx, progress) for idx in chunks]
    results: list[TrainResult | None] = [None] * len(configs)
    for idx, out in zip(chunks, outs):
        for j, i in enumerate(idx):
            W = out.weights[j].to(resolve_device(configs[i].device))
            results[i] = TrainResult(_net_from(configs[i], W), _config_history(out.history, j), configs[i],
                                     seconds=out.seconds / len(idx))
    return results


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Gradient descent on eq. (2) from the config's small Gaussian initialisation (App. F)."""
    check_instance("config", config, TrainConfig)
    return train_many([config], progress=progress)[0]


def train_many(configs, progress: bool = True, checkpoint_dir=None, workers: int = 1) -> list[TrainResult]:
    """Train several configs; the exact estimator runs them as one batched GD where possible.

    With ``checkpoint_dir``, Monte Carlo runs save their state atomically every 500 epochs and
    resume from it when called again with the same configs (the exact path needs no checkpoints: all
    32 Figure 6 trainings take well under a minute). ``workers``: processes for the exact estimator
    on CPU (1: all in this process; results agree with ``workers=1`` to rounding). Workers are
    started with multiprocessing's "spawn": a script that asks for ``workers > 1`` must call this
    under ``if __name__ == "__main__":``.
    """
    workers = check_int("workers", workers)
    configs = list(configs)
    if not configs:
        raise ValueError("configs must be a non-empty list of TrainConfig")
    for i, c in enumerate(configs):
        check_instance(f"configs[{i}]", c, TrainConfig)
    results: list[TrainResult | None] = [None] * len(configs)
    exact = [i for i, c in enumerate(configs) if c.estimator == "exact"]
    if exact:
        for i, res in zip(exact, _train_exact([configs[i] for i in exact], progress, workers)):
            results[i] = res
    groups: dict = {}
    for i, c in enumerate(configs):
        if c.estimator == "mc":
            groups.setdefault(_mc_group_key(c), []).append(i)
    for idx in tqdm(list(groups.values()), desc="training (Monte Carlo)", disable=not progress or len(groups) <= 1):
        t0 = time.perf_counter()
        group = _train_mc_group([configs[i] for i in idx], progress, checkpoint_dir)
        per = (time.perf_counter() - t0) / len(idx)
        for i, res in zip(idx, group):
            res.seconds = per
            results[i] = res
    return results


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train", "train_many", "ESTIMATORS",
           "ACTIVATIONS", "DTYPE"]
