"""DDPM over diffusers (empirics.ddpm): schedule, bit-identical resume, samplers, run folders, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from empirics import ddpm
from empirics.tasks import generate
from paper_figs.cli import main as cli_main
from theory.schedules import DDPMSchedule

ROOT = Path(__file__).resolve().parents[2]


def tiny(task="A", **kw):
    """A smoke config shrunk further for unit tests (seconds, not minutes)."""
    base = dict(n_train=32, batch_size=8, train_steps=6, checkpoint_every=2, snapshot_every=3, log_every=1)
    base.update(kw)
    return ddpm.make_config(task, "smoke", **base)


def load_ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)


def log_rows(run: Path) -> list[list[str]]:
    """loss.csv without its wall-clock column."""
    lines = (run / "loss.csv").read_text().strip().splitlines()
    return [line.split(",")[:3] for line in lines]


# ----------------------------------------------------------------------------------------------


def test_scheduler_is_the_papers_linear_schedule():
    """diffusers' beta_t and abar_t equal the paper's T = 1000, linear 1e-4 -> 2e-2 schedule.

    diffusers stores them in float32, so the tolerance is float32 round-off (relative 2e-7 per
    beta; the cumulative product accumulates at most ~T ulps, relative < 1e-4).
    """
    ref = DDPMSchedule()
    for kind in ("ddpm", "ddim"):
        s = ddpm.scheduler(kind)
        assert s.config.num_train_timesteps == 1000
        np.testing.assert_allclose(s.betas.double().numpy(), ref.betas, rtol=3e-7, atol=0)
        np.testing.assert_allclose(s.alphas_cumprod.double().numpy(), ref.alpha_bars, rtol=1e-4, atol=0)
        assert s.config.prediction_type == "epsilon"
    assert ddpm.scheduler("ddpm").config.variance_type == "fixed_small"


def test_resume_is_bit_identical(tmp_path):
    """k steps straight == k/2 steps, stop, resume, k/2 steps: weights, EMA, optimiser, RNG, loss log."""
    cfg = tiny()
    straight, split = tmp_path / "straight", tmp_path / "split"
    ddpm.train(straight, cfg, progress=False)
    first = ddpm.train(split, cfg, max_steps=3, progress=False)
    assert (first.end_step, first.finished) == (3, False)
    assert load_ckpt(split)["step"] == 3
    second = ddpm.train(split, progress=False)
    assert (second.start_step, second.end_step, second.finished) == (3, 6, True)
    a, b = load_ckpt(straight), load_ckpt(split)
    for key in ("model", "ema", "optimizer", "lr_schedule"):
        assert ddpm.state_equal(a[key], b[key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert log_rows(straight) == log_rows(split)
    assert ddpm.RunFiles(split).snapshot_steps() == [3, 6]
    assert ddpm.compare_runs(straight, split)["identical"]


def test_compare_runs_and_sample_sets_name_what_differs(tmp_path):
    """Another training seed: same training set, other config, losses and weights. Sample sets share
    their first min(n) samples; one changed pixel is found."""
    a, b = tmp_path / "a", tmp_path / "b"
    ddpm.train(a, tiny(), progress=False)
    ddpm.train(b, tiny(seed=1), progress=False)
    same = ddpm.compare_runs(a, a)
    assert same["identical"] and same["steps"] == [6, 6] and same["loss_rows"] == [6, 6]
    other = ddpm.compare_runs(a, b)
    assert other["train_images"] and other["step"]
    assert not (other["config"] or other["loss_log"] or other["model"] or other["ema"] or other["identical"])
    with pytest.raises(ddpm.CheckpointError, match="not a run folder"):
        ddpm.compare_runs(a, tmp_path / "nothing")

    images = generate("A", 4, size=16, seed=0).images
    ddpm.save_samples(images, "A", tmp_path / "s4", seeds=np.arange(4), meta={})
    ddpm.save_samples(images[:3], "A", tmp_path / "s3", seeds=np.arange(3), meta={})
    changed = images.copy()
    changed[2, 0, 0, 0] ^= 1
    ddpm.save_samples(changed, "A", tmp_path / "c4", seeds=np.arange(4), meta={})
    first = ddpm.compare_sample_sets(tmp_path / "s4", tmp_path / "s3")
    assert first["identical"] and first["compared"] == 3 and first["n"] == [4, 3]
    diff = ddpm.compare_sample_sets(tmp_path / "s4", tmp_path / "c4")
    assert diff["seeds_equal"] and diff["differing_samples"] == 1 and not diff["identical"]
    with pytest.raises(ValueError, match="no samples.npz"):
        ddpm.compare_sample_sets(tmp_path / "s4", tmp_path / "a")


def test_killed_during_checkpoint_write_resumes_from_previous(tmp_path, monkeypatch):
    """A crash inside the checkpoint write leaves the previous checkpoint, and resuming matches a straight run."""
    cfg = tiny()
    straight, run = tmp_path / "straight", tmp_path / "run"
    ddpm.train(straight, cfg, progress=False)
    ddpm.train(run, cfg, max_steps=2, progress=False)
    real_save = torch.save

    def dying_save(obj, fh, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == 4 and "optimizer" in obj:
            fh.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt("killed while writing")
        return real_save(obj, fh, *a, **k)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ddpm.train(run, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_ckpt(run)["step"] == 2
    # A hard kill would also leave the temporary file behind: it must not be mistaken for a checkpoint.
    (run / ".checkpoint.pt.abc.tmp").write_bytes(b"garbage")
    summary = ddpm.train(run, progress=False)
    assert (summary.start_step, summary.end_step) == (2, 6)
    assert ddpm.state_equal(load_ckpt(straight)["model"], load_ckpt(run)["model"])
    assert log_rows(straight) == log_rows(run)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    ddpm.train(run, tiny(), max_steps=2, progress=False)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ddpm.CheckpointError, match="corrupt or unreadable"):
        ddpm.train(run, progress=False)
    with pytest.raises(ddpm.CheckpointError, match="corrupt or unreadable"):
        ddpm.load_run(run)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    ddpm.train(run, tiny(), max_steps=2, progress=False)
    with pytest.raises(ddpm.CheckpointError, match="another config"):
        ddpm.train(run, tiny(lr=1e-4), progress=False)
    # a checkpoint copied in from another run
    other = tmp_path / "other"
    ddpm.train(other, tiny(seed=3), max_steps=2, progress=False)
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    with pytest.raises(ddpm.CheckpointError, match="another config"):
        ddpm.load_run(run)


def test_finished_run_is_a_no_op_through_the_api(tmp_path):
    """A finished run is returned as it is (0 new steps); force=True trains it again; refuse_finished is the
    error a CLI can report, and it names the API argument."""
    run = tmp_path / "run"
    first = ddpm.train(run, tiny(train_steps=2), progress=False)
    before = load_ckpt(run)
    again = ddpm.train(run, progress=False)
    assert (again.start_step, again.end_step, again.finished, again.seconds) == (2, 2, True, 0.0)
    assert again.last_loss == pytest.approx(first.last_loss, rel=1e-5)
    assert ddpm.state_equal(before["model"], load_ckpt(run)["model"])
    with pytest.raises(ddpm.CheckpointError, match=r"finished run .*force=True"):
        ddpm.train(run, progress=False, refuse_finished=True)
    forced = ddpm.train(run, force=True, progress=False)
    assert (forced.start_step, forced.end_step) == (0, 2)


def _interrupt_after_step(monkeypatch, step: int):
    """Make the loss log raise KeyboardInterrupt when it is asked to log a step past ``step`` (Ctrl-C)."""
    real_append = ddpm.LossLog.append

    def append(self, row):
        if int(row[0]) > step:
            raise KeyboardInterrupt
        real_append(self, row)

    monkeypatch.setattr(ddpm.LossLog, "append", append)


def test_wall_time_counts_interrupted_sessions_and_continues_across_resumes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_after_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        ddpm.train(run, tiny(), progress=False)
    monkeypatch.undo()
    stats = json.loads((run / "train_stats.json").read_text())
    assert [(s["start_step"], s["end_step"]) for s in stats["sessions"]] == [(0, 4)]  # the killed session counts
    first = stats["sessions"][0]["seconds"]
    assert first > 0 and stats["train_seconds_total"] == first
    ddpm.train(run, progress=False)
    stats = json.loads((run / "train_stats.json").read_text())
    assert [(s["start_step"], s["end_step"]) for s in stats["sessions"]] == [(0, 4), (4, 6)]
    assert stats["train_seconds_total"] == pytest.approx(sum(s["seconds"] for s in stats["sessions"]), abs=0.011)
    rows = [line.split(",") for line in (run / "loss.csv").read_text().strip().splitlines()[1:]]
    seconds = {int(r[0]): float(r[3]) for r in rows}
    assert sorted(seconds) == [1, 2, 3, 4, 5, 6]
    # the second session's clock starts where the first session's recorded time ends
    assert seconds[5] >= first - 0.011 and seconds[5] >= seconds[4] - 0.011
    assert all(seconds[k + 1] >= seconds[k] - 0.011 for k in range(1, 6))


def test_run_without_train_stats_resumes_and_counts_the_new_session(tmp_path):
    """A run folder whose sessions were never recorded (an older run killed before its first session ended)
    resumes bit for bit and records the session it runs."""
    straight, old = tmp_path / "straight", tmp_path / "old"
    ddpm.train(straight, tiny(), progress=False)
    ddpm.train(old, tiny(), max_steps=4, progress=False)
    (old / "train_stats.json").unlink()
    summary = ddpm.train(old, progress=False)
    assert (summary.start_step, summary.end_step) == (4, 6)
    assert ddpm.compare_runs(straight, old)["identical"]
    stats = json.loads((old / "train_stats.json").read_text())
    assert [(s["start_step"], s["end_step"]) for s in stats["sessions"]] == [(4, 6)]


def test_progress_bars_are_quiet_when_stderr_is_not_a_terminal(tmp_path, capsys):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    items = range(3)
    assert ddpm.progress_bar(items, True, "x", stream=io.StringIO()) is items
    assert ddpm.progress_bar(items, False, "x", stream=Terminal()) is items
    shown = Terminal()
    assert list(ddpm.progress_bar(items, True, "x", stream=shown)) == [0, 1, 2] and "x" in shown.getvalue()
    ddpm.train(tmp_path / "run", tiny(train_steps=2), progress=True)   # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_sample_folder_that_holds_a_users_file_is_refused_and_kept(tmp_path):
    """``out`` with a file sample did not write is not "already holding samples", and overwrite never deletes it."""
    images = np.zeros((2, 16, 16, 3), np.uint8)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a sample folder.*notes.txt") as err:
            ddpm.save_samples(images, "A", user, seeds=np.arange(2), meta={}, overwrite=overwrite)
        assert "already holds samples" not in str(err.value)
    # a sample set with a user's file added to it is refused too
    made = ddpm.save_samples(images, "A", tmp_path / "set", seeds=np.arange(2), meta={})
    (made / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a sample folder"):
        ddpm.save_samples(images, "A", made, seeds=np.arange(2), meta={}, overwrite=True)
    assert (user / "notes.txt").read_text() == (made / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    # a sample set alone is replaced with overwrite, refused without it
    (made / "notes.txt").unlink()
    with pytest.raises(ValueError, match="already holds samples"):
        ddpm.save_samples(images, "A", made, seeds=np.arange(2), meta={})
    ddpm.save_samples(images[:1], "A", made, seeds=np.arange(1), meta={}, overwrite=True)
    with np.load(made / "samples.npz") as z:
        assert len(z["images"]) == 1


def test_sample_out_that_is_a_file_or_dot_is_a_clear_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ddpm.train(run, tiny(train_steps=2), progress=False)
    spec = ddpm.SampleSpec("ddim", 2, 0.0)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        ddpm.sample(run, 2, spec, out=a_file, device="cpu", progress=False)
    with pytest.raises(ValueError, match="is under the file"):
        ddpm.sample(run, 2, spec, out=a_file / "sub", device="cpu", progress=False)
    monkeypatch.chdir(tmp_path)  # "." holds the run and the file: not a sample folder
    with pytest.raises(ValueError, match="not a sample folder"):
        ddpm.sample(run, 2, spec, out=".", device="cpu", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # an empty "." is a fine place for a set
    out = ddpm.sample(run, 2, spec, out=".", device="cpu", progress=False)
    assert out == empty and (empty / "samples.npz").is_file()
    assert a_file.read_text() == "x"


def test_no_run_folder_and_no_checkpoint(tmp_path):
    with pytest.raises(ddpm.CheckpointError, match="no run folder"):
        ddpm.load_run(tmp_path / "absent")
    run = ddpm.create_run(tmp_path / "fresh", tiny()).root
    with pytest.raises(ddpm.CheckpointError, match="no checkpoint yet"):
        ddpm.load_run(run)


def test_run_folder_holds_training_set_at_the_papers_sizes(tmp_path):
    assert ddpm.make_config("A", "cpu").n_train == 4000
    assert [ddpm.make_config(t, "paper").n_train for t in "BCD"] == [2000, 2000, 2000]
    # the paper's epochs: A 400 epochs of 4000 images at batch 128 = 400 * 31 steps
    assert ddpm.make_config("A", "paper").epochs == 400
    assert ddpm.make_config("C", "paper").epochs == 1600
    run = ddpm.create_run(tmp_path / "r", tiny("C")).root
    data = np.load(run / "train.npz")
    ref = generate("C", 32, 32, seed=0)
    assert np.array_equal(data["images"], ref.images)
    assert json.loads((run / "config.json").read_text())["task"] == "C"


def test_empirical_denoiser_samplers_return_training_images():
    """The exact eps-predictor of the empirical distribution: both samplers only replicate training images.

    Mean squared distance (in [-1, 1] units) to the nearest training image <= 1e-6, white corners.
    """
    train = generate("A", 24, 32, seed=5).images
    model = ddpm.EmpiricalDenoiser(train)
    x_train = ddpm.to_model_space(torch.from_numpy(train).permute(0, 3, 1, 2)).reshape(len(train), -1)
    for spec in (ddpm.SampleSpec("ddpm", 1000), ddpm.SampleSpec("ddim", 50, 0.0), ddpm.SampleSpec("ddim", 50, 1.0)):
        imgs = ddpm.sample_images(model, 6, 32, spec, seed=11, batch_size=6, device="cpu")
        x = ddpm.to_model_space(torch.from_numpy(imgs).permute(0, 3, 1, 2)).reshape(6, -1)
        msd = torch.cdist(x.double(), x_train.double()).pow(2).min(1).values / x.shape[1]
        assert msd.max().item() <= 1e-6, (spec.name, msd)
        corners = imgs[:, [0, 0, -1], [0, -1, 0]]
        assert corners.min() >= 250, spec.name


@pytest.mark.parametrize("spec", [ddpm.SampleSpec("ddim", 8, 1.0), ddpm.SampleSpec("dpmpp-sde", 8)],
                         ids=lambda s: s.name)
def test_one_seed_per_sample(tmp_path, spec):
    """Sample i is reproduced on its own (seed + i), whatever the batch; also for the multistep DPM-Solver++,
    whose scheduler state must start afresh in every batch (its second batch once ran off its sigma table)."""
    run = tmp_path / "run"
    ddpm.train(run, tiny(), progress=False)
    loaded = ddpm.load_run(run, device="cpu")
    with ddpm.ema_weights(loaded.model, loaded.ema):
        batch = ddpm.sample_images(loaded.model, 5, 32, spec, seed=100, batch_size=5, device="cpu")
        single = ddpm.sample_images(loaded.model, 1, 32, spec, seed=103, batch_size=1, device="cpu")
        other_batching = ddpm.sample_images(loaded.model, 5, 32, spec, seed=100, batch_size=2, device="cpu")
    # Batched convolutions may round differently from single ones (float32), so allow one grey level.
    assert np.abs(batch[3].astype(int) - single[0].astype(int)).max() <= 1
    assert np.abs(batch.astype(int) - other_batching.astype(int)).max() <= 1
    assert not np.array_equal(batch[0], batch[1])


def test_ema_weights_are_restored_after_sampling(tmp_path):
    run = tmp_path / "run"
    ddpm.train(run, tiny(), progress=False)
    loaded = ddpm.load_run(run, device="cpu")
    live = [p.detach().clone() for p in loaded.model.parameters()]
    with ddpm.ema_weights(loaded.model, loaded.ema):
        shadow = [p.detach().clone() for p in loaded.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(live, shadow))
    assert all(torch.equal(a, p) for a, p in zip(live, loaded.model.parameters()))


def test_smoke_end_to_end_cli(tmp_path, capsys):
    """The smoke preset trains, samples and evaluates through the CLI (its wall time is measured by
    benchmarks/ddpm_cost.py, not here)."""
    run = tmp_path / "runs" / "A"
    assert cli_main(["train", "A", "--preset", "smoke", "--out", str(run), "--no-progress"]) == 0
    assert cli_main(["sample", str(run), "--n", "16", "--sampler", "ddim", "--steps", "10", "--no-progress"]) == 0
    out = run / "samples" / "ddim-10-eta1"
    assert len(list((out / "A").glob("*.png"))) == 16
    meta = json.loads((out / "sample.json").read_text())
    assert meta["train_step"] == 20 and meta["n"] == 16
    assert cli_main(["eval", "A", str(out), "--n-boot", "0"]) == 0
    summary = json.loads((tmp_path / "runs" / "A" / "samples" / "ddim-10-eta1_eval" / "summary.json").read_text())
    assert summary["n_images"] == 16
    # a finished run is not retrained silently: the CLI refuses it (the API returns it as it is)
    ckpt, log = (run / "checkpoint.pt").read_bytes(), (run / "loss.csv").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "A", "--preset", "smoke", "--out", str(run), "--no-progress"])
    assert exc.value.code == 2
    assert "finished run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == ckpt and (run / "loss.csv").read_text() == log


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "paper_figs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "E", "--preset", "smoke"], "task must be one of"),
    (["train", "A", "--preset", "gpu"], "invalid choice: 'gpu'"),
    (["train", "A", "--preset", "smoke", "--steps", "0"], "--steps must be >= 1"),
    (["sample", "{out}", "--n", "0"], "--n must be >= 1"),
    (["sample", "{out}", "--sampler", "ddim", "--steps", "1001"], "--steps must be an integer in [1, 1000]"),
    (["sample", "{out}", "--eta", "0.5"], "--eta applies to --sampler ddim only"),
])
def test_bad_input_is_one_clear_line_and_leaves_nothing(tmp_path, args, message):
    """Bad flags are one line and exit 2; ``train`` leaves no folder, ``sample`` leaves the run as it was."""
    out = tmp_path / "run"
    if args[0] == "sample":
        ddpm.create_run(out, tiny())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.replace("{out}", str(out)) for a in args]
    if args[0] == "train":
        args += ["--out", str(out)]
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_cli_sample_without_checkpoint_and_train_with_other_config(tmp_path):
    run = tmp_path / "run"
    ddpm.create_run(run, ddpm.make_config("A", "smoke"))
    res = run_cli("sample", str(run), "--n", "2")
    assert res.returncode == 2 and "no checkpoint yet" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("train", "A", "--preset", "smoke", "--out", str(run), "--lr", "0.5")
    assert res.returncode == 2 and "--lr 0.5" in res.stderr and "choose another --out" in res.stderr
    assert f"'hidden-rules train A --preset smoke --out {run}'" in res.stderr  # the command that resumes it
    (run / "checkpoint.pt").write_bytes(b"\x00" * 10)
    res = run_cli("sample", str(run), "--n", "2")
    assert res.returncode == 2 and "corrupt" in res.stderr and "Traceback" not in res.stderr


def test_accelerate_launch_runs_the_same_loop(tmp_path):
    """``accelerate launch`` (one CPU process) runs the unchanged loop and gives the same weights."""
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists():
        pytest.skip("accelerate's launcher is not installed next to this python")
    run = tmp_path / "acc"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run([str(launcher), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "paper_figs.cli", "train", "A",
                          "--preset", "smoke", "--steps", "4", "--out", str(run), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = tmp_path / "plain"
    ddpm.train(ref, ddpm.make_config("A", "smoke", train_steps=4), progress=False)
    assert ddpm.state_equal(load_ckpt(run)["model"], load_ckpt(ref)["model"])


def test_appendix_d3_dit_backbone(tmp_path):
    cfg = tiny(backbone="dit", dit_layers=1, dit_heads=2, dit_head_dim=8, dit_patch=4, train_steps=2)
    ddpm.train(tmp_path / "dit", cfg, progress=False)
    out = ddpm.sample(tmp_path / "dit", 2, ddpm.SampleSpec("ddim", 3, 0.0), progress=False)
    assert np.load(out / "samples.npz")["images"].shape == (2, 32, 32, 3)


def test_appendix_d3_64px_images(tmp_path):
    cfg = tiny(size=64, train_steps=2)
    ddpm.train(tmp_path / "r64", cfg, progress=False)
    out = ddpm.sample(tmp_path / "r64", 2, ddpm.SampleSpec("ddim", 3, 1.0), progress=False)
    assert np.load(out / "samples.npz")["images"].shape == (2, 64, 64, 3)


def test_appendix_d3_larger_training_set(tmp_path):
    cfg = ddpm.make_config("A", "smoke", n_train=20000, train_steps=1)
    assert ddpm.make_config("A", "paper", n_train=40000).epochs == 400
    ddpm.train(tmp_path / "big", cfg, progress=False)
    assert len(np.load(tmp_path / "big" / "train.npz")["images"]) == 20000


def test_config_validation():
    with pytest.raises(ValueError, match="preset must be one of"):
        ddpm.make_config("A", "gpu")
    with pytest.raises(ValueError, match="task must be one of"):
        ddpm.make_config("E", "cpu")
    with pytest.raises(ValueError, match="norm_num_groups"):
        ddpm.make_config("A", "cpu", norm_num_groups=7)
    with pytest.raises(ValueError, match="unknown config fields"):
        ddpm.make_config("A", "cpu", epochs=3)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        ddpm.SampleSpec("ddpm", 1001)
    with pytest.raises(ValueError, match="sampler must be"):
        ddpm.SampleSpec("euler", 10)
    with pytest.raises(ValueError, match="eta"):
        ddpm.SampleSpec("ddim", 10, 1.5)


def test_interrupted_sampling_resumes_bit_identically(tmp_path, monkeypatch):
    """A set killed after its first batch resumes from the partial file and equals an uninterrupted one."""
    run = tmp_path / "run"
    ddpm.train(run, tiny(), progress=False)
    spec = ddpm.SampleSpec("ddim", 4, 1.0)
    straight = ddpm.sample(run, 5, spec, out=tmp_path / "straight", batch_size=2, device="cpu", progress=False)

    real_save = ddpm.PartialSamples.save
    calls = []

    def save_then_die(self, images, seconds, sessions):
        real_save(self, images, seconds, sessions)
        calls.append(len(images))
        raise KeyboardInterrupt

    monkeypatch.setattr(ddpm.PartialSamples, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        ddpm.sample(run, 5, spec, out=tmp_path / "resumed", batch_size=2, device="cpu", progress=False)
    partial = tmp_path / ".resumed.partial.npz"
    assert calls == [2] and partial.exists() and not (tmp_path / "resumed").exists()

    # other settings are refused while the partial file is there, and it is left untouched
    with pytest.raises(ValueError, match="batch_size differ"):
        ddpm.sample(run, 5, spec, out=tmp_path / "resumed", batch_size=3, device="cpu", progress=False)

    monkeypatch.setattr(ddpm.PartialSamples, "save", real_save)
    drawn = []
    real_sample_images = ddpm.sample_images

    def counting(*args, **kw):
        drawn.append(len(kw["done"]) if kw.get("done") is not None else 0)
        return real_sample_images(*args, **kw)

    monkeypatch.setattr(ddpm.sampling, "sample_images", counting)
    resumed = ddpm.sample(run, 5, spec, out=tmp_path / "resumed", batch_size=2, device="cpu", progress=False)
    assert drawn == [2]  # the first batch was not drawn again
    with np.load(straight / "samples.npz") as a, np.load(resumed / "samples.npz") as b:
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["seeds"], b["seeds"])
    assert ddpm.compare_sample_sets(straight, resumed)["identical"]
    meta = json.loads((resumed / "sample.json").read_text())
    assert meta["sessions"] == 2 and "summed over 2 sessions" in meta["timing"]
    assert not partial.exists()


def test_sample_images_done_must_be_whole_batches():
    model = ddpm.EmpiricalDenoiser(np.full((2, 8, 8, 3), 255, np.uint8))
    spec = ddpm.SampleSpec("ddim", 2, 0.0)
    with pytest.raises(ValueError, match="whole number of batches"):
        ddpm.sample_images(model, 4, 8, spec, batch_size=2, device="cpu", done=np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="done must be uint8"):
        ddpm.sample_images(model, 4, 8, spec, batch_size=2, device="cpu", done=np.zeros((2, 8, 8, 3)))
