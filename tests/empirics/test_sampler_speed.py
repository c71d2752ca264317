"""benchmarks/sampler_speed.py reuses the first n samples of a larger set of the same sampler."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from empirics import ddpm

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("sampler_speed", ROOT / "benchmarks" / "sampler_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smaller_set_is_the_first_n_of_a_larger_one(tmp_path):
    bench = _bench()
    run = tmp_path / "run"
    cfg = ddpm.make_config("A", "smoke", n_train=32, batch_size=8, train_steps=2, checkpoint_every=2,
                           snapshot_every=2, log_every=1)
    ddpm.train(run, cfg, progress=False)
    spec = ddpm.SampleSpec("ddim", 5, 1.0)
    samples = ddpm.RunFiles(run).samples
    assert bench._larger_set(run, spec, 3) is None
    big = ddpm.sample(run, 6, spec, out=samples / f"bench6-{spec.name}", batch_size=6, device="cpu", progress=False)
    assert bench._larger_set(run, spec, 6) is None and bench._larger_set(run, spec, 3) == big
    assert bench._larger_set(run, ddpm.SampleSpec("ddim", 5, 0.0), 3) is None  # another sampler
    small = samples / f"bench3-{spec.name}"
    bench._first_n(big, small, 3)
    with np.load(big / "samples.npz") as zb, np.load(small / "samples.npz") as zs:
        assert np.array_equal(zs["images"], zb["images"][:3]) and zs["seeds"].tolist() == [0, 1, 2]
    drawn = ddpm.sample(run, 3, spec, out=tmp_path / "direct", batch_size=3, device="cpu", progress=False)
    with np.load(drawn / "samples.npz") as zd, np.load(small / "samples.npz") as zs:
        # sample i depends on seed i only (one grey level: batched float32 convolutions round differently)
        assert np.abs(zd["images"].astype(int) - zs["images"].astype(int)).max() <= 1
    meta_big = json.loads((big / "sample.json").read_text())
    meta = json.loads((small / "sample.json").read_text())
    assert meta["n"] == 3 and meta["first_n_of"] == big.name
    assert meta["seconds"] == meta_big["seconds"] * 3 / 6 and "scaled" in meta["timing"]
    assert (small / "A" / "000002.png").exists() and not (small / "A" / "000003.png").exists()


def test_compare_needs_every_shared_ci_to_overlap():
    bench = _bench()
    ref = {"sampler": "ddpm-1000", "seconds": 100.0, "r2_ci95": [0.90, 0.95], "bg_ci95": [95, 99]}
    fast = {"sampler": "ddim-50-eta1", "seconds": 5.0, "r2_ci95": [0.94, 0.97], "bg_ci95": [80, 90]}
    mid = {"sampler": "ddim-100-eta1", "seconds": 10.0, "r2_ci95": [0.93, 0.96], "bg_ci95": [97, 100]}
    verdict = bench.compare([ref, fast, mid])
    assert fast["mismatches"] == ["bg"] and not fast["matches_ancestral"]
    assert mid["matches_ancestral"] and mid["compared"] == ["r2", "bg"]
    assert verdict == {"fastest_matching": "ddim-100-eta1", "speedup": 10.0}
    assert bench.compare([fast, mid]) is None  # no ancestral reference: nothing to match
