"""``--threads`` (empirics.threads), the min-SNR loss weighting and the ``cpu`` / ``cpu-2000`` DDPM presets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from empirics import ddpm, threads
from paper_figs.cli import main as cli_main
from tests.empirics.test_ddpm import run_cli, tiny
from theory.schedules import DDPMSchedule

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bad", [0, -1, 10_000, 1.5, True, "two", None])
def test_choose_threads_refuses_what_is_not_a_usable_count(bad):
    with pytest.raises(ValueError, match="threads must be"):
        threads.choose_threads(bad)


def test_choose_threads_keeps_a_valid_count_and_auto_stays_in_range(monkeypatch):
    assert threads.choose_threads(1) == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= threads.choose_threads("auto") <= threads.usable_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads("auto") == 1


def test_idle_cpus_sees_a_busy_process():
    """A process spinning on one core takes (close to) one core away from the idle count.

    ``/proc/stat`` counts every core, so a spinning process shows as at least ~0.6 of a busy core
    over 0.5 s unless the kernel starved it; the control is the count of all cores."""
    if threads._cpu_times() is None:
        pytest.skip("no /proc/stat on this system")
    total = threads.os.cpu_count()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        import time
        time.sleep(0.3)
        idle = threads.idle_cpus(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.0 <= idle <= total - 0.6


def test_parse_threads():
    assert threads.parse_threads("auto") == "auto"
    assert threads.parse_threads("2") == 2
    for bad in ("0", "-3", "x", ""):
        with pytest.raises(ValueError, match="--threads must be"):
            threads.parse_threads(bad)


@pytest.mark.parametrize("value, message", [("0", "--threads must be 'auto' or a positive integer"),
                                            ("many", "--threads must be 'auto' or a positive integer"),
                                            ("10000", "threads must be between 1 and")])
def test_cli_threads_bad_value_is_one_line_and_leaves_nothing(tmp_path, value, message):
    out = tmp_path / "run"
    res = run_cli("train", "A", "--preset", "smoke", "--out", str(out), "--threads", value)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_cli_threads_is_used_and_recorded(tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "A", "--preset", "smoke", "--steps", "2", "--out", str(run), "--threads", "1",
                     "--no-progress"]) == 0
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["sessions"][-1]["torch_threads"] == 1
    assert cli_main(["sample", str(run), "--n", "2", "--sampler", "ddim", "--steps", "2", "--threads", "1",
                     "--no-progress"]) == 0
    meta = json.loads(next((run / "samples").glob("*/sample.json")).read_text())
    assert meta["torch_threads"] == 1
    torch.set_num_threads(1)


def test_min_snr_weights_are_min_snr_over_snr():
    """min-SNR-gamma for eps-prediction against the paper's schedule in float64. diffusers stores abar in
    float32, so 1 - abar carries a relative error of up to ~2 ulp(1) / (1 - abar): the tolerance."""
    sched = ddpm.scheduler("ddpm")
    t = torch.arange(0, 1000, 37)
    cfg = tiny(loss_weighting="min-snr", min_snr_gamma=5.0)
    abar = DDPMSchedule().alpha_bars[t.numpy()]
    snr = abar / (1 - abar)
    got = ddpm.loss_weights(cfg, sched.alphas_cumprod, t).numpy().astype(np.float64)
    want = np.minimum(snr, 5.0) / snr
    rtol = 4 * 2.0**-24 / (1 - abar) + 2.0**-23
    assert np.all(np.abs(got - want) <= rtol * want)
    assert ddpm.loss_weights(tiny(), sched.alphas_cumprod, t) is None
    with pytest.raises(ValueError, match="loss_weighting must be one of"):
        tiny(loss_weighting="snr")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        tiny(loss_weighting="min-snr", min_snr_gamma=0.0)


def test_min_snr_training_differs_from_the_papers_loss(tmp_path):
    ddpm.train(tmp_path / "eps", tiny(), progress=False)
    ddpm.train(tmp_path / "snr", tiny(loss_weighting="min-snr"), progress=False)
    a, b = (torch.load(tmp_path / k / "checkpoint.pt", weights_only=False)["model"] for k in ("eps", "snr"))
    assert not ddpm.state_equal(a, b)


def test_run_written_before_a_config_field_existed_stays_readable(tmp_path):
    """A checkpoint and config.json without the fields added later (loss weighting) load and resume."""
    run = tmp_path / "old"
    cfg = tiny()
    ddpm.train(run, cfg, max_steps=3, progress=False)
    new_fields = ("loss_weighting", "min_snr_gamma")
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in stored.items() if k not in new_fields}))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in new_fields}
    torch.save(ckpt, run / "checkpoint.pt")
    assert ddpm.load_run(run).step == 3
    assert ddpm.train(run, progress=False).end_step == cfg.train_steps


def test_cpu_2000_preset_is_the_committed_section3_recipe():
    """``cpu-2000`` rebuilds the config of the committed 2000-step runs (written as preset "cpu")."""
    for task in "ABCD":
        stored = json.loads((ROOT / "docs" / "section3" / f"config_{task}.json").read_text())
        rebuilt = ddpm.make_config(task, "cpu-2000").to_json()
        assert stored.pop("preset") == "cpu" and rebuilt.pop("preset") == "cpu-2000"
        assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in rebuilt.items() if k in stored} == stored
        assert rebuilt["loss_weighting"] == "eps"


def test_cpu_preset_smoke_sized_trains_and_resumes_bit_identically(tmp_path):
    """The ``cpu`` preset's recipe (min-SNR-5, batch 32, cosine decay) at smoke size: k steps straight
    equal k/2, stop, resume."""
    cfg = ddpm.make_config("C", "cpu", n_train=64, batch_size=8, train_steps=4, channels=(16, 32),
                           checkpoint_every=2, snapshot_every=2, log_every=1)
    full = ddpm.make_config("C", "cpu")
    assert (full.loss_weighting, full.min_snr_gamma, full.batch_size, full.train_steps) == ("min-snr", 5.0, 32, 8000)
    assert (cfg.loss_weighting, cfg.lr_schedule) == ("min-snr", "cosine")
    ddpm.train(tmp_path / "straight", cfg, progress=False)
    ddpm.train(tmp_path / "split", cfg, max_steps=2, progress=False)
    ddpm.train(tmp_path / "split", progress=False)
    assert ddpm.compare_runs(tmp_path / "straight", tmp_path / "split")["identical"]
