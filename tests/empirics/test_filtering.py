"""Filtered DDPM (Section 5, App. G.2): pixel-space classifiers, the class-1 filter, the oracle filter, files."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from empirics.evaluate import evaluate
from empirics.filtering import (
    PRESETS,
    Architecture,
    FilterConfig,
    build_filter_network,
    filter_config,
    filter_samples,
    load_filter,
    oracle_filter,
    predicted_class,
    random_subset_control,
    save_filter,
    train_filter,
    train_test_split,
)
from empirics.tasks import TARGET_SLOPE, Task, generate

SIZE = 16
PER_CLASS = 20
FACTORS = (0.6, 1.0, 1.4)  # App. G.1's classes 0, 1, 2: below, on and above the fine rule


@pytest.fixture(scope="module")
def contrastive():
    """A tiny 3-class Task D set: y/x = 0.6 k, k, 1.4 k (labels 0, 1, 2), 20 images each."""
    parts = [generate("D", PER_CLASS, SIZE, seed=10 + c, fine_factor=f) for c, f in enumerate(FACTORS)]
    return np.concatenate([p.images for p in parts]), np.repeat(np.arange(3), PER_CLASS)


@pytest.fixture(scope="module")
def trained(contrastive):
    images, labels = contrastive
    return {a: train_filter(images, labels, filter_config(a, "smoke")) for a in Architecture}


# ----------------------------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("arch", list(Architecture))
def test_each_architecture_trains_and_reproduces(arch, contrastive, trained):
    images, labels = contrastive
    first = trained[arch]
    assert 0.0 <= first.test_accuracy <= 1.0
    assert first.train_loss.shape == (first.config.epochs,) and np.all(np.isfinite(first.train_loss))
    p = first.predict_proba(images)
    assert p.dtype == np.float64 and p.shape == (len(images), 3)
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # The reported accuracy is the share of test images whose argmax is their label.
    test = first.test_index
    assert first.test_accuracy == np.mean(predicted_class(p[test]) == labels[test])
    # 80:20, stratified: 4 of each class's 20 images are held out; disjoint, together all images.
    assert len(first.train_index) == 48 and len(test) == 12
    assert np.intersect1d(first.train_index, test).size == 0
    assert np.array_equal(np.union1d(first.train_index, test), np.arange(len(images)))
    assert np.array_equal(np.bincount(labels[test], minlength=3), [4, 4, 4])
    # Same config, same data: the same weights bit for bit, hence the same predictions.
    again = train_filter(images, labels, first.config)
    assert np.array_equal(again.test_index, test)
    assert np.array_equal(again.train_loss, first.train_loss)
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert np.array_equal(again.predict_proba(images), p)


def test_architectures_are_what_they_say():
    # ResNet-8: stem conv + 3 stages x 2 convs + linear head = 8 weighted layers (1x1 shortcuts aside).
    net = build_filter_network(filter_config("resnet8", "paper"), 32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 8
    # The U-Net encoder is diffusers' down path without a time embedding.
    from diffusers.models.unets.unet_2d_blocks import AttnDownBlock2D, DownBlock2D

    enc = build_filter_network(filter_config("unet_encoder", "paper"), 32)
    kinds = [type(b) for b in enc.down]
    assert kinds == [DownBlock2D, AttnDownBlock2D, AttnDownBlock2D]
    assert all(r.time_emb_proj is None for b in enc.down for r in b.resnets)
    x = torch.zeros(2, 3, 32, 32)
    for arch in Architecture:
        assert build_filter_network(filter_config(arch, "smoke"), 32)(x).shape == (2, 3)
    # The weights are drawn from config.seed alone, without touching the global generator.
    state = torch.get_rng_state()
    a = build_filter_network(filter_config("mlp", "smoke", seed=3), 16).state_dict()
    b = build_filter_network(filter_config("mlp", "smoke", seed=3), 16).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.get_rng_state(), state)


def test_split_is_seeded_and_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = train_test_split(labels, 0.2, seed=5)
    assert np.array_equal(np.bincount(labels[test], minlength=3), [10, 6, 4])
    assert len(train) == 80 and np.intersect1d(train, test).size == 0
    assert np.array_equal(train_test_split(labels, 0.2, seed=5)[1], test)
    assert not np.array_equal(train_test_split(labels, 0.2, seed=6)[1], test)
    _, loose = train_test_split(labels, 0.2, seed=5, stratified=False)
    assert len(loose) == 20
    # round half up per class: 0.25 * 10 = 2.5 -> 3 test images of each class
    assert len(train_test_split(np.repeat([0, 1, 2], 10), 0.25)[1]) == 9
    with pytest.raises(ValueError, match="both need at least one"):
        train_test_split(np.array([0, 1]), 0.2)


def test_training_learns_a_separable_toy():
    # Classes differ by a brightness shift of -60 / 0 / +60 grey levels over pixel noise of +-68:
    # separable through the image mean. Bound: >= 16 of 18 test images right (chance is 1/3; the
    # probability of >= 16 by guessing is 1.7e-6; all three reach 18 of 18 today), and the training
    # loss falls below a third of the first epoch's for every architecture after 10 smoke epochs.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    noise = rng.integers(60, 197, (len(labels), SIZE, SIZE, 3))
    images = np.clip(noise + np.array([-60, 0, 60])[labels][:, None, None, None], 0, 255).astype(np.uint8)
    for arch in Architecture:
        result = train_filter(images, labels, filter_config(arch, "smoke", epochs=10))
        assert len(result.test_index) == 18
        assert result.test_accuracy >= 16 / 18, (arch, result.test_accuracy)
        assert result.train_loss[-1] < result.train_loss[0] / 3, (arch, result.train_loss)


# ----------------------------------------------------------------------------------------------
# The class-1 filter


def test_filter_keeps_exactly_the_predicted_class_1():
    p = np.array([
        [0.1, 0.8, 0.1],     # class 1, confident               -> kept
        [0.3, 0.4, 0.3],     # class 1, below 0.5               -> dropped at 0.5, kept at 0.4 and 0
        [0.25, 0.5, 0.25],   # class 1 exactly at the threshold -> kept
        [0.5, 0.5, 0.0],     # tie 0 / 1: argmax is 0           -> dropped
        [0.0, 0.5, 0.5],     # tie 1 / 2: argmax is 1           -> kept
        [0.6, 0.3, 0.1],     # class 0                          -> dropped
        [0.1, 0.2, 0.7],     # class 2                          -> dropped
        [1 / 3, 1 / 3, 1 / 3],  # three-way tie: argmax 0       -> dropped
    ])
    expected = (np.argmax(p, axis=1) == 1) & (p[:, 1] >= 0.5)
    assert np.array_equal(expected, [True, False, True, False, True, False, False, False])
    assert np.array_equal(filter_samples(p, 0.5), expected)
    assert np.array_equal(filter_samples(p, 0.4), [True, True, True, False, True, False, False, False])
    # Threshold 0 (any threshold <= 1/3) is the paper's rule: argmax == 1 alone.
    assert np.array_equal(filter_samples(p, 0.0), predicted_class(p) == 1)
    assert np.array_equal(filter_samples(p, 1.0), np.zeros(len(p), bool))
    assert filter_samples(np.empty((0, 3)), 0.5).shape == (0,)


rows = st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0.0, 1.0), min_size=3, max_size=3)


@given(st.lists(rows, min_size=1, max_size=12),
       st.sampled_from([0.0, 1 / 3, 0.5, 0.75, 1.0]) | st.floats(0.0, 1.0))
def test_filter_mask_is_argmax_and_threshold(raw, threshold):
    p = np.asarray(raw, np.float64) + 1e-3
    p = p / p.sum(axis=1, keepdims=True)
    p[0] = [0.5 * (1 - threshold), threshold, 0.5 * (1 - threshold)]  # a row at the threshold
    expected = (np.argmax(p, axis=1) == 1) & (p[:, 1] >= threshold)
    assert np.array_equal(filter_samples(p, threshold), expected)


@pytest.mark.parametrize("threshold", [-0.1, 1.1, math.nan, math.inf, "high", None])
def test_filter_rejects_bad_thresholds(threshold):
    with pytest.raises(ValueError, match="threshold"):
        filter_samples(np.array([[0.2, 0.6, 0.2]]), threshold)


@pytest.mark.parametrize("p, match", [
    (np.array([0.2, 0.6, 0.2]), r"\[N, 3\]"),
    (np.array([[0.5, 0.5]]), r"\[N, 3\]"),
    (np.array([[0, 1, 0]]), r"\[N, 3\]"),                  # integers
    (np.array([[-1.0, 3.0, -1.0]]), "logits"),
    (np.array([[0.2, math.nan, 0.8]]), "finite"),
    (np.array([[0.2, 0.2, 0.2]]), "sum to 1"),
])
def test_filter_rejects_bad_probabilities(p, match):
    with pytest.raises(ValueError, match=match):
        filter_samples(p, 0.5)


# ----------------------------------------------------------------------------------------------
# The oracle filter


def test_oracle_keeps_the_valid_samples_within_tolerance():
    on_rule = generate("D", 8, 32, seed=21).images                      # y/x = k
    off_rule = generate("D", 8, 32, seed=22, fine_factor=1.4).images    # y/x = 1.4 k
    blank = np.full((1, 32, 32, 3), 255, np.uint8)                      # invalid: nothing drawn
    ev = evaluate(np.concatenate([on_rule, off_rule, blank]), "D")
    assert ev.valid[:16].all() and not ev.valid[16]
    kept = oracle_filter(ev, tolerance=0.05)
    assert np.array_equal(kept, np.arange(17) < 8)
    # A tolerance wide enough for 1.4 k keeps the off-rule images too, never the invalid one.
    assert np.array_equal(oracle_filter(ev, tolerance=0.5), np.arange(17) < 16)


def test_oracle_tolerance_is_relative_and_inclusive():
    ev = evaluate(generate("A", 4, 32, seed=1).images, "A")
    assert TARGET_SLOPE[Task.A] == 1.0
    ev = dataclasses.replace(ev, valid=np.array([True, True, True, False]), x=np.array([1.0, 1.0, 2.0, 1.0]),
                             y=np.array([1.25, 1.2500001, 1.5, 1.0]))
    # |y/(k x) - 1| = 0.25 (kept: at the tolerance), just above 0.25, 0.25, invalid
    assert np.array_equal(oracle_filter(ev, tolerance=0.25), [True, False, True, False])


@pytest.mark.parametrize("tolerance", [0.0, -0.05, math.nan, math.inf, "5%"])
def test_oracle_rejects_bad_tolerance(tolerance):
    ev = evaluate(generate("D", 2, 32, seed=1).images, "D")
    with pytest.raises(ValueError, match="tolerance"):
        oracle_filter(ev, tolerance)


def _synthetic_evaluation(n=400, seed=0):
    """An Evaluation of n Task-A samples whose fine-rule ratio y/x is 1 + noise (sd 5 %), 5 % invalid."""
    rng = np.random.default_rng(seed)
    ev = evaluate(generate("A", 1, 32, seed=1).images, "A")
    x = rng.uniform(0.02, 0.18, n)
    y = x * (1 + 0.05 * rng.standard_normal(n))
    valid = rng.random(n) > 0.05
    idx = np.zeros(n, int)
    return dataclasses.replace(ev.take(idx), valid=valid, x=x, y=y, coarse_ok=np.ones(n, bool))


def test_random_subset_control_tells_a_rule_filter_from_chance():
    ev = _synthetic_evaluation()
    # Positive control: keeping the samples nearest the rule beats every random subset of that size.
    near = oracle_filter(ev, tolerance=0.03)
    assert 50 < near.sum() < 350
    res = random_subset_control(ev, near, draws=99, seed=3)
    assert res["n_keep"] == near.sum() and res["draws"] == 99 and res["unfitted"] == 0
    assert res["p_error_lower"] == res["p_r2_higher"] == 1 / 100
    assert res["beats_chance"] == {"error": True, "r2": True}
    assert res["kept"]["error"] < res["random"]["error"]["p2.5"]
    # Negative control: a filter that keeps at random. Under the null its p-value is uniform, so over
    # 20 independent random filters (99 draws each) the count below 0.05 is Binomial(20, <= 0.05):
    # P(count >= 5) < 0.003.
    ps = []
    for k in range(20):
        keep = np.random.default_rng([99, k]).random(len(ev)) < 0.4
        ps.append(random_subset_control(ev, keep, draws=99, seed=k)["p_error_lower"])
    assert sum(p < 0.05 for p in ps) < 5
    # The median of 20 uniform p-values lies outside (0.2, 0.8) with probability < 0.006.
    assert 0.2 < np.median(ps) < 0.8


def test_random_subset_control_is_seeded_and_edge_cases():
    ev = _synthetic_evaluation(60)
    keep = np.arange(60) % 2 == 0
    a = random_subset_control(ev, keep, draws=30, seed=5)
    assert a == random_subset_control(ev, keep, draws=30, seed=5)
    assert a != random_subset_control(ev, keep, draws=30, seed=6)
    # Keeping everything: every draw is the whole set, so the p-values are exactly 1.
    full = random_subset_control(ev, np.ones(60, bool), draws=10)
    assert full["p_error_lower"] == full["p_r2_higher"] == 1.0
    # A filter that keeps fewer than 3 valid samples has no fit, hence no null.
    assert random_subset_control(ev, np.arange(60) < 2, draws=10) is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep=np.ones(5, bool)), "boolean mask of shape"),
    (dict(keep=np.ones(60, int)), "boolean mask"),
    (dict(draws=0), "draws"),
    (dict(seed=-1), "seed"),
])
def test_random_subset_control_rejects_bad_input(kwargs, match):
    ev = _synthetic_evaluation(60)
    args = dict(keep=np.ones(60, bool)) | kwargs
    with pytest.raises(ValueError, match=match):
        random_subset_control(ev, args.pop("keep"), **args)
    with pytest.raises(ValueError, match="Evaluation"):
        random_subset_control(np.ones((3, 3)), np.ones(3, bool))


def test_oracle_needs_an_evaluation():
    with pytest.raises(ValueError, match="Evaluation"):
        oracle_filter(np.ones((3, 3)))


# ----------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("arch", list(Architecture))
def test_save_load_round_trip(arch, contrastive, trained, tmp_path):
    images, _ = contrastive
    path = save_filter(trained[arch], tmp_path / "filter.pt", "D", SIZE)
    loaded = load_filter(path, task="D", size=SIZE)
    assert loaded.task is Task.D and loaded.config == trained[arch].config and loaded.size == SIZE
    assert np.array_equal(loaded.predict_proba(images), trained[arch].predict_proba(images))
    assert np.array_equal(loaded.test_index, trained[arch].test_index)
    assert np.array_equal(loaded.train_loss, trained[arch].train_loss)
    assert loaded.test_accuracy == trained[arch].test_accuracy
    assert load_filter(path).task is Task.D
    assert [p.name for p in tmp_path.iterdir()] == ["filter.pt"]   # no temporary left behind


def test_load_refuses_other_task_size_and_corrupt_files(trained, tmp_path):
    path = save_filter(trained[Architecture.MLP], tmp_path / "filter.pt", "D", SIZE)
    with pytest.raises(ValueError, match="task D, not A"):
        load_filter(path, task="A")
    with pytest.raises(ValueError, match="16 px images, not 32 px"):
        load_filter(path, task="D", size=32)
    with pytest.raises(ValueError, match="no filter file"):
        load_filter(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match="corrupt"):
            load_filter(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a filter file"):
        load_filter(other)
    with pytest.raises(ValueError, match="size 32 does not match"):
        save_filter(trained[Architecture.MLP], tmp_path / "x.pt", "D", 32)


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("images, match", [
    (np.zeros((6, 16, 16, 3), np.float32), "uint8"),
    (np.zeros((6, 16, 16), np.uint8), "uint8"),
    (np.zeros((6, 16, 12, 3), np.uint8), "uint8"),
    (np.zeros((6, 4, 4, 3), np.uint8), "at least 8"),
])
def test_train_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        train_filter(images, np.arange(6) % 3, filter_config("mlp", "smoke"))


@pytest.mark.parametrize("labels, match", [
    (np.arange(5) % 3, "one label per image"),
    (np.array([0, 1, 2, 3, 1, 0]), r"in \{0, 1, 2\}.*\[3\]"),
    (np.array([0, 1, 2, -1, 1, 0]), r"\[-1\]"),
    (np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), "integers"),
    (np.array([[0, 1, 2, 0, 1, 2]]), "1-D"),
])
def test_train_rejects_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        train_filter(np.zeros((6, 16, 16, 3), np.uint8), labels, filter_config("mlp", "smoke"))


@pytest.mark.parametrize("arch, fields, match", [
    ("mlp", dict(epochs=0), "epochs"),
    ("mlp", dict(lr=0.0), "lr"),
    ("mlp", dict(batch_size=0), "batch_size"),
    ("mlp", dict(test_fraction=0.0), "test_fraction"),
    ("mlp", dict(test_fraction=1.0), "test_fraction"),
    ("mlp", dict(weight_decay=-1.0), "weight_decay"),
    ("mlp", dict(seed=-1), "seed"),
    ("mlp", dict(hidden=()), "hidden"),
    ("mlp", dict(stratified="yes"), "stratified"),
    ("resnet8", dict(channels=(8, 16)), "3 stages"),
    ("unet_encoder", dict(channels=(8, 12), norm_num_groups=8), "divide"),
    ("unet_encoder", dict(attention=(True,)), "one flag per down block"),
    ("transformer", dict(), "architecture must be one of"),
])
def test_config_rejects_bad_values(arch, fields, match):
    with pytest.raises(ValueError, match=match):
        FilterConfig(architecture=arch, **fields)


def test_config_presets_and_files():
    paper = filter_config("mlp", "paper")
    assert (paper.epochs, paper.lr, paper.test_fraction) == (100, 3e-4, 0.2)            # App. G.2
    assert set(PRESETS) == {"paper", "cpu", "smoke"}
    for preset in PRESETS:
        for arch in Architecture:
            config = filter_config(arch, preset)
            assert FilterConfig.from_json(config.to_json()) == config
    assert filter_config(" ResNet8 ", "smoke").architecture is Architecture.RESNET8
    with pytest.raises(ValueError, match="preset"):
        filter_config("mlp", "gpu")
    with pytest.raises(ValueError, match="unknown filter config fields"):
        filter_config("mlp", "smoke", learning_rate=1.0)
    with pytest.raises(ValueError, match="FilterConfig"):
        train_filter(np.zeros((6, 16, 16, 3), np.uint8), np.arange(6) % 3, {"architecture": "mlp"})


def test_predict_rejects_other_image_sizes(trained):
    with pytest.raises(ValueError, match="trained on 16 x 16 px"):
        trained[Architecture.MLP].predict_proba(np.zeros((2, 32, 32, 3), np.uint8))


def test_batch_norm_statistics_are_those_of_the_final_weights(contrastive, trained):
    """After training, each BatchNorm holds the mean over one shuffled pass's batches of its input's
    batch statistics under the final weights (not running averages that lag the weights)."""
    images, labels = contrastive
    model = trained[Architecture.RESNET8].model
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().double()))
    from empirics.filtering import as_model_input, epoch_order

    result = trained[Architecture.RESNET8]
    train, bs = result.train_index, result.config.batch_size
    # the pass after the last epoch, shuffled as training is (a class-sorted pass would lose the
    # between-class variance)
    x = as_model_input(images[train])[epoch_order(result.config, result.config.epochs, len(train))]
    try:
        with torch.no_grad():
            model.eval()
            for i in range(0, len(x), bs):
                model(x[i:i + bs])
    finally:
        hook.remove()
    means = torch.stack([z.mean(dim=(0, 2, 3)) for z in seen]).mean(0)
    variances = torch.stack([z.var(dim=(0, 2, 3), unbiased=True) for z in seen]).mean(0)
    # float32 activations averaged over a few hundred values each: agreement to ~1e-6 relative
    assert torch.allclose(bn.running_mean.double(), means, rtol=1e-5, atol=1e-6)
    assert torch.allclose(bn.running_var.double(), variances, rtol=1e-5, atol=1e-6)
