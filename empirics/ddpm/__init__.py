"""DDPM on the synthetic tasks (Section 3.2, App. D.1, D.3) over huggingface diffusers.

The paper trains an unconditional pixel-space DDPM (Ho et al. 2020) on each task: T = 1000, linear
beta from 1e-4 to 2e-2, epsilon-prediction with the mean-squared error at a uniform timestep, a
U-Net denoiser, AdamW. Here:

* the denoiser is diffusers' ``UNet2DModel`` (or ``DiTTransformer2DModel``, App. D.3), wrapped by
  :class:`Denoiser` so that every backbone is ``eps = net(x_t, t)``;
* the schedule is diffusers' ``DDPMScheduler`` (training noise and the ancestral sampler) and
  ``DDIMScheduler`` (the fast sampler); :func:`scheduler` builds either with the paper's values;
* weights are averaged by ``diffusers.training_utils.EMAModel`` and sampling uses the EMA weights
  (store / copy_to / restore around it);
* the loop runs as one process or under ``accelerate launch`` (data-parallel), unchanged;
* classifier guidance (Section 5) enters the samplers through a :class:`Guide`
  (``empirics.guidance.ClassifierGuide``), one step at a time in :func:`reverse_step`.

A run is a folder (:class:`RunFiles`, :mod:`empirics.ddpm.runfolder`): ``config.json``, the training set
``train.npz`` drawn by ``empirics.tasks.generate`` at the paper's sizes, ``checkpoint.pt`` (atomic; model,
EMA, optimiser, learning-rate schedule, step, RNG states, config), ``snapshots/`` (EMA weights every
``snapshot_every`` steps, for curves against training), ``loss.csv``, ``train_stats.json`` and ``samples/``.

Resuming is bit-identical (:mod:`empirics.ddpm.train`): the batch, timesteps and noise of step k are drawn
from generators seeded by (seed, k, process rank), and the data order of epoch e from (seed, e), so a run
interrupted and resumed draws exactly what an uninterrupted one draws. The RNG states of torch, numpy and
python are saved too, for code that uses the global generators.

Where we differ from the text, and why:
* No random flips or crops (the paper does not mention augmentation): a flip would move Task A's
  sun to the other side and Task D's squares between halves, changing the rules' statistics.
* The ``cpu`` preset is a small U-Net (README "Section 3 on a CPU") with ``norm_num_groups=8``:
  with diffusers' default of 32 groups, every GroupNorm of a 32-channel block normalises each
  channel on its own and removes its mean, and the backgrounds came out grey. It uses a linear
  warm-up and cosine decay of the learning rate because its budget is a fixed number of steps.
* The paper's U-Net (App. D.1: "two convolutional layers followed by ReLU", self-attention in each
  down-sampling block, 14M parameters) is approximated by diffusers' ``UNet2DModel`` with SiLU,
  ``layers_per_block=2`` and attention blocks; the paper does not give its batch size (we use 128).


The package, by stage (each name below is also importable from ``empirics.ddpm`` itself):

* :mod:`~empirics.ddpm.config`: :class:`DDPMConfig`, ``PRESETS``, :func:`make_config`, :class:`SampleSpec`, enums;
* :mod:`~empirics.ddpm.model`: :class:`Denoiser`, :func:`build_denoiser`, :func:`scheduler`, tensor scalings;
* :mod:`~empirics.ddpm.loss`: the epsilon MSE and min-SNR-gamma as loss classes;
* :mod:`~empirics.ddpm.runfolder`: :class:`RunFiles`, :func:`create_run`, :func:`read_config`, the checkpoint
  reader, the loss log and ``train_stats.json``;
* :mod:`~empirics.ddpm.train`: :func:`train`, one loop with its phases marked;
* :mod:`~empirics.ddpm.guided_step`: :func:`reverse_step` with classifier guidance, :class:`Guide`;
* :mod:`~empirics.ddpm.sampling`: :func:`load_run`, :func:`sample_images`, :func:`sample` (resumable),
  :func:`save_samples`;
* :mod:`~empirics.ddpm.reproducibility`: :func:`state_equal`, :func:`compare_runs`, :func:`compare_sample_sets`;
* :mod:`~empirics.ddpm.empirical`: :class:`EmpiricalDenoiser`; :mod:`~empirics.ddpm.restore`: ``restore_run``.
"""

from empirics.ddpm.config import (
    BETA_END,
    BETA_START,
    PAPER_EPOCHS,
    PRESETS,
    PRESETS_NAMES,
    T_STEPS,
    TRAIN_SIZES,
    Backbone,
    CheckpointError,
    DDPMConfig,
    LossWeighting,
    Sampler,
    SampleSpec,
    make_config,
    parse_sampler,
)
from empirics.ddpm.empirical import EmpiricalDenoiser
from empirics.ddpm.guided_step import Guide, posterior_variance, reverse_step
from empirics.ddpm.loss import EpsLoss, MinSNRLoss, loss_weights, make_loss
from empirics.ddpm.model import Denoiser, build_denoiser, resolve_device, scheduler, to_model_space, to_uint8
from empirics.ddpm.progress import progress_bar
from empirics.ddpm.reproducibility import compare_runs, compare_sample_sets, state_equal
from empirics.ddpm.restore import restore_run
from empirics.ddpm.runfolder import (
    LossLog,
    RunFiles,
    TrainStats,
    create_run,
    peak_rss_mib,
    read_checkpoint,
    read_config,
    read_torch_file,
)
from empirics.ddpm.sampling import (
    LoadedRun,
    PartialSamples,
    check_sample_folder,
    ema_weights,
    load_run,
    sample,
    sample_images,
    save_samples,
)
from empirics.ddpm.train import TrainSummary, batch_indices, step_generator, train

__all__ = [
    "Backbone", "Sampler", "LossWeighting", "loss_weights", "DDPMConfig", "PRESETS", "PAPER_EPOCHS", "TRAIN_SIZES",
    "make_config",
    "RunFiles", "Denoiser", "build_denoiser", "scheduler", "train", "TrainSummary", "load_run",
    "LoadedRun", "ema_weights", "read_config", "create_run", "sample", "sample_images", "save_samples",
    "EmpiricalDenoiser", "SampleSpec", "CheckpointError", "Guide", "posterior_variance", "reverse_step",
    # beyond the names above: what other modules, tests and benchmarks use
    "PRESETS_NAMES", "T_STEPS", "BETA_START", "BETA_END", "parse_sampler", "EpsLoss", "MinSNRLoss", "make_loss",
    "resolve_device", "to_model_space", "to_uint8", "progress_bar", "state_equal", "compare_runs",
    "compare_sample_sets", "restore_run", "LossLog", "TrainStats", "peak_rss_mib", "read_checkpoint", "read_torch_file",
    "PartialSamples", "check_sample_folder", "step_generator", "batch_indices",
]
