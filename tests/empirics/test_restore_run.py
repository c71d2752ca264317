"""``empirics.runs.restore_run``: a run folder rebuilt from its committed record (config, sample npz, sample
json) has the training set ``train`` drew, bit for bit, and the sample set as committed; bad records are
refused with a ValueError that says what was wrong, and leave no folder behind. Smoke-sized (16 images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from empirics import ddpm
from empirics.data.io import load_npz
from empirics.runs import load_samples, restore_run, sample_sets
from empirics.tasks import generate

N_TRAIN = 16


def _record(tmp_path: Path, task: str = "C", data_seed: int = 3, n: int = 5) -> tuple[Path, Path, Path]:
    """A committed record as docs/section3 holds it: config_<T>.json, samples_<T>_<name>.npz (images,
    seeds, task as `hidden-rules sample` writes them) and sample_<T>_<name>.json."""
    config = ddpm.make_config(task, "smoke", n_train=N_TRAIN, data_seed=data_seed)
    config_json = tmp_path / f"config_{task}.json"
    config_json.write_text(json.dumps(config.to_json(), indent=2))
    images = generate(task, n, 32, seed=11).images  # stand-ins for DDPM samples
    npz = tmp_path / f"samples_{task}_ddim-50-eta1.npz"
    np.savez_compressed(npz, images=images, seeds=np.arange(n, dtype=np.int64) * 3 + 1, task=np.array(task))
    meta = tmp_path / f"sample_{task}_ddim-50-eta1.json"
    meta.write_text(json.dumps({"sampler": "ddim", "steps": 50, "eta": 1.0, "seconds": 1.5}))
    return config_json, npz, meta


def test_restored_run_has_config_training_set_and_samples(tmp_path):
    config_json, npz, meta = _record(tmp_path)
    out = restore_run(tmp_path / "run", config_json, npz, meta)
    assert out == tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "samples", "train.npz"]
    config = ddpm.read_config(out)
    assert json.loads((out / "config.json").read_text()) == json.loads(config_json.read_text())
    # the training set is what `train` draws: generate(task, n_train, size, data_seed), bit for bit
    train, fresh = load_npz(out / "train.npz"), generate("C", N_TRAIN, size=32, seed=3)
    assert train.images.dtype == fresh.images.dtype and train.images.tobytes() == fresh.images.tobytes()
    assert set(train.params) == set(fresh.params)
    for k, v in fresh.params.items():
        assert train.params[k].tobytes() == v.tobytes(), k
    # the sample set, named from the npz's stem, equals the npz; its metadata is sample.json
    assert sample_sets(out) == ["ddim-50-eta1"]
    s = load_samples(out)
    with np.load(npz) as z:
        assert s.images.dtype == np.uint8 and s.images.tobytes() == z["images"].tobytes()
        np.testing.assert_array_equal(s.seeds, z["seeds"])
    assert s.meta == json.loads(meta.read_text()) and s.config == config


def test_restore_run_names_and_metadata(tmp_path):
    """``name`` overrides the npz stem; without sample_json the metadata is empty; a different data seed
    gives a different training set (so the bit-for-bit check above can fail)."""
    config_json, npz, _ = _record(tmp_path, task="D", data_seed=4)
    out = restore_run(tmp_path / "run", config_json, npz, name="mine")
    assert sample_sets(out) == ["mine"] and load_samples(out, "mine").meta == {}
    other = generate("D", N_TRAIN, size=32, seed=5).images
    assert load_npz(out / "train.npz").images.tobytes() != other.tobytes()


def _refused(tmp_path: Path, out: Path, *args, match: str, **kwargs) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=match):
        restore_run(out, *args, **kwargs)
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before, "a refused restore left files behind"


def test_restore_run_refuses_bad_records(tmp_path):
    config_json, npz, meta = _record(tmp_path)
    out = tmp_path / "run"
    # missing files, each named
    _refused(tmp_path, out, tmp_path / "nope.json", npz, match="nope.json' is not a file")
    _refused(tmp_path, out, config_json, tmp_path / "nope.npz", match="nope.npz' is not a file")
    _refused(tmp_path, out, config_json, npz, tmp_path / "nope_meta.json", match="nope_meta.json' is not a file")
    # an npz without images (or without seeds)
    np.savez(tmp_path / "no_images.npz", seeds=np.arange(5), task=np.array("C"))
    _refused(tmp_path, out, config_json, tmp_path / "no_images.npz", match="must hold 'images' and 'seeds'")
    np.savez(tmp_path / "no_seeds.npz", images=generate("C", 2, 32, seed=0).images)
    _refused(tmp_path, out, config_json, tmp_path / "no_seeds.npz", match="must hold 'images' and 'seeds'")
    # samples of another task than the config's
    np.savez(tmp_path / "samples_D.npz", images=generate("D", 2, 32, seed=0).images, seeds=np.arange(2),
             task=np.array("D"))
    _refused(tmp_path, out, config_json, tmp_path / "samples_D.npz",
             match="holds task D samples, the config is task C")
    # a config that is not a run config
    (tmp_path / "list.json").write_text("[1, 2]")
    _refused(tmp_path, out, tmp_path / "list.json", npz, match="config")
    (tmp_path / "half.json").write_text('{"task": "C"}')
    _refused(tmp_path, out, tmp_path / "half.json", npz, match="half.json' is not a run config")


def test_restore_run_refuses_a_non_empty_out_folder(tmp_path):
    config_json, npz, meta = _record(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("someone's file")
    with pytest.raises(ValueError, match="run' exists and is not empty"):
        restore_run(out, config_json, npz, meta)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="a_file' exists and is not a folder"):
        restore_run(tmp_path / "a_file", config_json, npz, meta)
    restored = restore_run(tmp_path / "empty", config_json, npz, meta)  # an empty folder is fine
    assert sample_sets(restored) == ["ddim-50-eta1"]


def test_restore_run_checks_the_samples_before_writing(tmp_path):
    """Samples that `save_samples` would refuse (not uint8, seeds of another length, another image size than
    the config's), an unsafe set name, a file that is not an npz and a sample json that is not a JSON object
    are refused before anything is written: no half-made run folder (config + train.npz, no samples)."""
    config_json, npz, meta = _record(tmp_path)
    out = tmp_path / "run"
    images = generate("C", 4, 32, seed=0).images
    np.savez(tmp_path / "float.npz", images=images / 255.0, seeds=np.arange(4))
    _refused(tmp_path, out, config_json, tmp_path / "float.npz", match=r"uint8 \[N, 32, 32, 3\].*float64")
    np.savez(tmp_path / "short.npz", images=images, seeds=np.arange(3))
    _refused(tmp_path, out, config_json, tmp_path / "short.npz", match=r"one integer seed per image \(4,\)")
    np.savez(tmp_path / "big.npz", images=generate("C", 2, 64, seed=0).images, seeds=np.arange(2))
    _refused(tmp_path, out, config_json, tmp_path / "big.npz", match=r"uint8 \[N, 32, 32, 3\].*\(2, 64, 64, 3\)")
    (tmp_path / "text.npz").write_text("not an archive")
    _refused(tmp_path, out, config_json, tmp_path / "text.npz", match="is not an .npz archive")
    (tmp_path / "bad_meta.json").write_text("not json")
    _refused(tmp_path, out, config_json, npz, tmp_path / "bad_meta.json", match="bad_meta.json' is not a JSON object")
    (tmp_path / "list_meta.json").write_text("[1]")
    _refused(tmp_path, out, config_json, npz, tmp_path / "list_meta.json", match="is not a JSON object")
    for name in ("../escape", "a/b", ".hidden", ""):
        _refused(tmp_path, out, config_json, npz, meta, name=name, match="name must be a folder name")


def test_restore_run_interrupted_leaves_nothing(tmp_path, monkeypatch):
    """An exception (or Ctrl-C) while the sample set is written removes the half-made run folder."""
    config_json, npz, meta = _record(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ddpm.restore, "save_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore_run(tmp_path / "run", config_json, npz, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
