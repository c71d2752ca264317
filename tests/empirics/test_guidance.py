"""Classifier guidance (empirics.guidance, Section 5 / App. G.1) and its hook in empirics.ddpm's sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from empirics import ddpm
from empirics import guidance as gd
from empirics.tasks import generate

SIZE = 32


@pytest.fixture(scope="module")
def contrastive_images():
    """App. G.1's three classes in miniature: Task A with y/x scaled by 0.7 (class 0), 1 (class 1), 1.3 (class 2)."""
    images = np.concatenate([generate("A", 8, SIZE, seed=s, fine_factor=f).images
                             for s, f in ((1, 0.7), (2, 1.0), (3, 1.3))])
    return images, np.repeat([0, 1, 2], 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, contrastive_images):
    """A smoke classifier trained for 4 steps, and its folder."""
    images, labels = contrastive_images
    out = tmp_path_factory.mktemp("classifier")
    summary = gd.train_classifier(images, labels, gd.make_classifier_config("A", "smoke"), out, progress=False)
    assert summary.finished and summary.end_step == 4
    return out, gd.load_classifier(out, "A", SIZE)


@pytest.fixture(scope="module")
def denoiser():
    """An untrained smoke U-Net: samples are noise-like, which is all the sampler tests need."""
    return ddpm.build_denoiser(ddpm.make_config("A", "smoke", channels_last=False)).eval()


class Brightness(torch.nn.Module):
    """An analytic classifier: logits (0, a * mean(x), 0), so p(y = 1 | x) grows with the mean pixel value."""

    def __init__(self, a: float = 20.0):
        super().__init__()
        self.a = a

    def forward(self, x, t):
        zero = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        return torch.stack([zero, self.a * x.mean(dim=(1, 2, 3)), zero], dim=1)


class Counting(torch.nn.Module):
    """Wraps a classifier and counts its calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x, t):
        self.calls += 1
        return self.inner(x, t)


# ----------------------------------------------------------------------------------------------
# NT-Xent, eq. (9)


def test_nt_xent_four_samples_by_hand():
    """z1 = (1, 0), z2 = (0, 1), z3 = (-1, 0), z4 = (1, 1); tau = 1/2, so exp(sim / tau) = exp(2 sim).

    Cosine similarities: s12 = 0, s13 = -1, s14 = 1/sqrt2, s23 = 0, s24 = 1/sqrt2, s34 = -1/sqrt2.
    """
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    r2 = math.sqrt(2.0)
    d1 = math.exp(0.0) + math.exp(-2.0) + math.exp(r2)     # anchor 1: k = 2, 3, 4
    d2 = math.exp(0.0) + math.exp(0.0) + math.exp(r2)      # anchor 2: k = 1, 3, 4
    d3 = math.exp(-2.0) + math.exp(0.0) + math.exp(-r2)    # anchor 3: k = 1, 2, 4
    d4 = math.exp(r2) + math.exp(r2) + math.exp(-r2)       # anchor 4: k = 1, 2, 3

    # labels (0, 0, 1, 0): anchor 1's positives are 2 and 4, anchor 2's 1 and 4, anchor 4's 1 and 2;
    # anchor 3 has none and is left out. -log(exp(2 s_ij) / d_i) = log d_i - 2 s_ij.
    loss1 = ((math.log(d1) - 0.0) + (math.log(d1) - r2)) / 2
    loss2 = ((math.log(d2) - 0.0) + (math.log(d2) - r2)) / 2
    loss4 = ((math.log(d4) - r2) + (math.log(d4) - r2)) / 2
    expected = (loss1 + loss2 + loss4) / 3
    assert abs(gd.nt_xent(z, [0, 0, 1, 0], tau=0.5).item() - expected) <= 1e-10

    # labels (0, 0, 1, 1): one positive each, eq. (9) averaged over the 2N = 4 ordered pairs.
    pairs = [math.log(d1) - 0.0, math.log(d2) - 0.0, math.log(d3) + r2, math.log(d4) + r2]
    assert abs(gd.nt_xent(z, torch.tensor([0, 0, 1, 1]), tau=0.5).item() - sum(pairs) / 4) <= 1e-10
    # cosine similarity: the scale of each embedding does not matter
    scaled = z * torch.tensor([[3.0], [0.5], [2.0], [7.0]], dtype=torch.float64)
    assert abs(gd.nt_xent(scaled, [0, 0, 1, 1]).item() - sum(pairs) / 4) <= 1e-10
    # no anchor with a positive: 0, and still part of the graph
    zg = z.clone().requires_grad_(True)
    loss = gd.nt_xent(zg, [0, 1, 2, 3])
    loss.backward()
    assert loss.item() == 0.0 and zg.grad is not None


@pytest.mark.parametrize("z, labels, tau, message", [
    (torch.ones(4), [0, 0, 1, 1], 0.5, "2-D"),
    (torch.ones(4, 2, 1), [0, 0, 1, 1], 0.5, "2-D"),
    (torch.ones(4, 2, dtype=torch.long), [0, 0, 1, 1], 0.5, "float"),
    (torch.ones(4, 2), [0, 0, 1], 0.5, "labels must be 4 integers"),
    (torch.ones(4, 2), [0.0, 0.0, 1.0, 1.0], 0.5, "labels must be 4 integers"),
    (torch.ones(4, 2), [0, 0, 1, 1], 0.0, "tau"),
    (torch.ones(4, 2), [0, 0, 1, 1], -1.0, "tau"),
    (torch.ones(4, 2), [0, 0, 1, 1], float("nan"), "tau"),
    (torch.ones(4, 2), [0, 0, 1, 1], float("inf"), "tau"),
])
def test_nt_xent_bad_input(z, labels, tau, message):
    with pytest.raises(ValueError, match=message):
        gd.nt_xent(z, labels, tau)


# ----------------------------------------------------------------------------------------------
# Schedules


def test_constant_and_piecewise_schedules():
    assert np.array_equal(gd.GuidanceSchedule("constant", 3.0).scales(5), [3.0] * 5)
    ramp = gd.GuidanceSchedule(gd.GuidanceKind.PIECEWISE, 10.0, last_k=4).scales(10)
    assert np.allclose(ramp, [0, 0, 0, 0, 0, 0, 2.5, 5.0, 7.5, 10.0], rtol=0, atol=1e-15)
    assert np.array_equal(gd.GuidanceSchedule("piecewise", 6.0, last_k=1).scales(3), [0, 0, 6.0])
    assert np.allclose(gd.GuidanceSchedule("piecewise", 3.0, last_k=3).scales(3), [1.0, 2.0, 3.0])
    # App. G.1: 7 for A/C, 10 for B/D; piecewise over the last 20 steps for C, constant for A, B, D
    assert [gd.default_scale(t) for t in "ABCD"] == [7.0, 10.0, 7.0, 10.0]
    c = gd.paper_schedule("C")
    assert (c.kind, c.scale, c.last_k) == (gd.GuidanceKind.PIECEWISE, 7.0, 20)
    assert gd.paper_schedule("D").kind is gd.GuidanceKind.CONSTANT and gd.paper_schedule("B").scale == 10.0
    sched = ddpm.scheduler("ddpm")
    sched.set_timesteps(50)
    assert np.count_nonzero(c.scales(len(sched.timesteps))) == 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=float("nan")), "scale must be a finite"),
    (dict(scale=float("inf")), "scale must be a finite"),
    (dict(scale="big"), "scale must be a finite"),
    (dict(kind="piecewise", last_k=0), "last_k must be an integer >= 1"),
    (dict(kind="linear"), "kind must be one of"),
])
def test_bad_schedule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gd.GuidanceSchedule(**kwargs)


def test_ramp_longer_than_the_sampler_is_refused_when_sampling_starts(denoiser):
    guide = gd.ClassifierGuide(Counting(Brightness()), gd.GuidanceSchedule("piecewise", 7.0, last_k=20))
    with pytest.raises(ValueError, match=r"last_k=20 .* 5 sampling steps"):
        ddpm.sample_images(denoiser, 2, SIZE, ddpm.SampleSpec("ddim", 5), device="cpu", guide=guide)
    assert guide.classifier.calls == 0
    with pytest.raises(ValueError, match="guide must have"):
        ddpm.sample_images(denoiser, 1, SIZE, ddpm.SampleSpec("ddim", 2), device="cpu",
                           guide=lambda x, t, eps: eps)


# ----------------------------------------------------------------------------------------------
# The sampler hook


@pytest.mark.parametrize("spec", [ddpm.SampleSpec("ddpm", 6), ddpm.SampleSpec("ddim", 6, 1.0),
                                  ddpm.SampleSpec("dpmpp-sde", 6)], ids=lambda s: s.name)
def test_scale_zero_is_bit_identical_and_computes_no_gradient(denoiser, trained, spec):
    counting = Counting(trained[1])
    zero = gd.ClassifierGuide(counting, gd.GuidanceSchedule("constant", 0.0))
    plain = ddpm.sample_images(denoiser, 3, SIZE, spec, seed=21, batch_size=3, device="cpu")
    guided = ddpm.sample_images(denoiser, 3, SIZE, spec, seed=21, batch_size=3, device="cpu", guide=zero)
    assert np.array_equal(plain, guided)
    assert counting.calls == 0


def test_guidance_raises_the_classifier_probability(denoiser):
    """Guided samples (DDIM score form, ancestral mean shift) have a larger log p(y = 1 | x_0), sample by
    sample and from the same seeds; guiding toward class 0 lowers it. At scale 100 p(y = 1) was
    0.24-0.35 unguided, 1.00 guided, 0.01 guided to class 0 (DDIM); 0.74-0.87, 0.93-0.96, 0.44-0.56 (DDPM)."""
    clf = Brightness()

    def log_p(spec, target=None):
        guide = None if target is None else gd.ClassifierGuide(clf, gd.GuidanceSchedule("constant", 100.0), target)
        images = ddpm.sample_images(denoiser, 4, SIZE, spec, seed=3, batch_size=4, device="cpu", guide=guide)
        return gd.classifier_log_prob(clf, images, t=0)

    for spec in (ddpm.SampleSpec("ddim", 8), ddpm.SampleSpec("ddpm", 8)):
        plain, toward, away = log_p(spec), log_p(spec, gd.RULE_CLASS), log_p(spec, 0)
        assert (toward > plain + 0.05).all(), (spec.name, plain, toward)
        assert (away < plain - 0.05).all(), (spec.name, plain, away)


def test_guided_sample_i_is_reproducible_from_seed_plus_i(denoiser, trained):
    guide = gd.ClassifierGuide(trained[1], gd.GuidanceSchedule("piecewise", 500.0, last_k=3))
    spec = ddpm.SampleSpec("ddim", 5, 1.0)
    batch = ddpm.sample_images(denoiser, 3, SIZE, spec, seed=40, batch_size=3, device="cpu", guide=guide)
    single = ddpm.sample_images(denoiser, 1, SIZE, spec, seed=42, batch_size=1, device="cpu", guide=guide)
    assert np.abs(batch[2].astype(int) - single[0].astype(int)).max() <= 1


def test_ancestral_step_mean_shift_is_scale_sigma_grad(trained):
    """One respaced DDPM step: guided - unguided = s * Sigma_t * grad, Sigma_t = beta~ to the respaced t_prev."""
    sched = ddpm.scheduler("ddpm")
    sched.set_timesteps(10)
    spec = ddpm.SampleSpec("ddpm", 10)
    t = sched.timesteps[3]  # 600 -> 500
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 3, SIZE, SIZE), generator=gen)
    eps = torch.randn((2, 3, SIZE, SIZE), generator=gen)
    guide = gd.ClassifierGuide(trained[1], gd.GuidanceSchedule("constant", 1.0))
    grad = guide.grad_log_prob(x, torch.full((2,), int(t)))
    s = 2000.0

    def step(**kw):
        gens = [torch.Generator().manual_seed(k) for k in (7, 8)]  # the same step noise both times
        return ddpm.reverse_step(sched, spec, x, t, eps, gens, **kw)

    sigma = ddpm.posterior_variance(sched, t)
    abar = sched.alphas_cumprod.double()
    t_prev = int(t) - 100
    beta_tilde = (1 - abar[t_prev]) / (1 - abar[int(t)]) * (1 - abar[int(t)] / abar[t_prev])
    assert sigma == pytest.approx(beta_tilde.item(), rel=1e-12)
    assert sigma == pytest.approx(float(sched._get_variance(t)), rel=1e-5)  # diffusers' own variance
    shift = s * sigma * grad
    assert shift.abs().max() > 1e-3  # far above float32 round-off
    torch.testing.assert_close(step(scale=s, grad=grad) - step(), shift, rtol=0, atol=1e-6)
    # the last step (t = 0 -> x_0) has Sigma = 0: unguided
    assert ddpm.posterior_variance(sched, sched.timesteps[-1]) == 0.0
    full = ddpm.scheduler("ddpm")
    assert ddpm.posterior_variance(full, 500) == pytest.approx(
        ((1 - abar[499]) / (1 - abar[500]) * full.betas.double()[500]).item(), rel=1e-5)

    # DDIM: the score form eps_hat = eps - sqrt(1 - abar_t) * s * grad, exactly, while x0 stays in [-1, 1]
    ddim = ddpm.scheduler("ddim")
    ddim.set_timesteps(10)
    a_t = float(ddim.alphas_cumprod[int(t)])
    x0 = 0.8 * (torch.rand((2, 3, SIZE, SIZE), generator=gen) - 0.5)
    x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps
    s = 30.0
    eps_hat = eps - math.sqrt(1 - a_t) * s * grad
    assert ((x_t - math.sqrt(1 - a_t) * eps_hat) / math.sqrt(a_t)).abs().max() < 1  # no clipping
    for eta in (0.0, 1.0):
        dspec = ddpm.SampleSpec("ddim", 10, eta)
        guided = ddpm.reverse_step(ddim, dspec, x_t, t, eps, [torch.Generator().manual_seed(9)] * 2, scale=s,
                                   grad=grad)
        plain = ddpm.reverse_step(ddim, dspec, x_t, t, eps, [torch.Generator().manual_seed(9)] * 2)
        literal = ddim.step(eps_hat, t, x_t, eta=eta, generator=[torch.Generator().manual_seed(9)] * 2).prev_sample
        assert (guided - plain).abs().max() > 1e-3
        torch.testing.assert_close(guided, literal, rtol=0, atol=1e-5)
    # where x0 is clipped the step still moves along the gradient
    far = 10 * x_t
    moved = ddpm.reverse_step(ddim, spec_ddim := ddpm.SampleSpec("ddim", 10), far, t, eps, None, scale=s, grad=grad) \
        - ddpm.reverse_step(ddim, spec_ddim, far, t, eps, None)
    assert (moved * grad).sum() > 0
    with pytest.raises(ValueError, match="needs grad"):
        ddpm.reverse_step(sched, spec, x, t, eps, None, scale=1.0)


# ----------------------------------------------------------------------------------------------
# Training, checkpoints, accuracy


def test_training_resumes_bit_identically(tmp_path, contrastive_images, trained):
    images, labels = contrastive_images
    cfg = gd.make_classifier_config("A", "smoke")
    part = tmp_path / "part"
    first = gd.train_classifier(images, labels, cfg, part, max_steps=2, progress=False)
    assert (first.start_step, first.end_step, first.finished) == (0, 2, False)
    second = gd.train_classifier(images, labels, cfg, part, progress=False)
    assert (second.start_step, second.end_step, second.finished) == (2, 4, True)
    resumed, straight = gd.load_classifier(part), trained[1]
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items()):
        assert torch.equal(a, b), name
    rows = (part / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,cross_entropy,nt_xent,accuracy,seconds" and len(rows) == 5
    # time counts from step 0 over both sessions: the log's clock does not restart at the resume
    seconds = [float(r.split(",")[-1]) for r in rows[1:]]
    assert seconds == sorted(seconds) and seconds[-1] <= second.total_seconds
    # the first session's checkpointed time is carried over (what it spent after its checkpoint is not)
    assert second.seconds < second.total_seconds <= first.total_seconds + second.seconds
    with pytest.raises(ValueError, match="finished classifier"):
        gd.train_classifier(images, labels, cfg, part)
    with pytest.raises(ValueError, match="other images or labels"):
        gd.train_classifier(images, labels[::-1].copy(), cfg, part)
    with pytest.raises(ValueError, match="another config"):
        gd.train_classifier(images, labels, gd.make_classifier_config("A", "smoke", lr=1e-3), part)


def test_held_out_accuracy_by_timestep(trained):
    images = np.concatenate([generate("A", 4, SIZE, seed=s, fine_factor=f).images
                             for s, f in ((11, 0.7), (12, 1.0), (13, 1.3))])
    labels = np.repeat([0, 1, 2], 4)
    acc = gd.classifier_accuracy(trained[1], images, labels, [0, 500, 999])
    assert list(acc) == [0, 500, 999]
    assert all(v in {k / 12 for k in range(13)} for v in acc.values())
    assert acc == gd.classifier_accuracy(trained[1], images, labels, [0, 500, 999])  # seeded noise
    with pytest.raises(ValueError, match="t must be an integer in"):
        gd.classifier_accuracy(trained[1], images, labels, [1000])


def test_checkpoint_for_another_task_or_size_or_corrupt_is_refused(tmp_path, trained):
    folder, _ = trained
    assert gd.load_classifier(folder / "checkpoint.pt", task="A", size=SIZE).config.task == "A"
    with pytest.raises(ValueError, match="another task or image size.*task A at 32 px, asked for task B at 32 px"):
        gd.load_classifier(folder, task="B")
    with pytest.raises(ValueError, match="another task or image size.*asked for task A at 64 px"):
        gd.load_classifier(folder, task="A", size=64)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((folder / "checkpoint.pt").read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt or unreadable"):
        gd.load_classifier(bad)
    other = tmp_path / "other.pt"
    torch.save({"step": 3}, other)
    with pytest.raises(ValueError, match="not a classifier checkpoint"):
        gd.load_classifier(other)
    with pytest.raises(ValueError, match="no classifier checkpoint"):
        gd.load_classifier(tmp_path / "absent")


def test_bad_training_input(tmp_path, contrastive_images):
    images, labels = contrastive_images
    cfg = gd.make_classifier_config("A", "smoke")
    with pytest.raises(ValueError, match="classifier was trained on 32 x 32 px images"):
        gd.train_classifier(images[:, :16, :16], labels, cfg, tmp_path / "a")
    with pytest.raises(ValueError, match="in {0, 1, 2}"):
        gd.train_classifier(images, labels + 1, cfg, tmp_path / "b")
    with pytest.raises(ValueError, match="labels must be 24 integers"):
        gd.train_classifier(images, labels[:-1], cfg, tmp_path / "c")
    with pytest.raises(ValueError, match="batch_size"):
        gd.train_classifier(images[:8], labels[:8], cfg, tmp_path / "d")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gd.make_classifier_config("A", "smoke", temperature=0.0)
    with pytest.raises(ValueError, match="norm_num_groups=4 must divide"):
        gd.make_classifier_config("A", "smoke", channels=(8, 18))
    with pytest.raises(ValueError, match="target must be an integer in"):
        gd.ClassifierGuide(Brightness(), gd.GuidanceSchedule(), target=3)
    assert not any(tmp_path.iterdir())
