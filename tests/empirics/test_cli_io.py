"""Save/load (npz, PNG folder), `hidden-rules data` / `eval` / `figure3` end to end at toy sizes."""

import csv
import json

import cv2
import numpy as np
import pytest

from empirics.data.io import load_npz, load_png_folder, read_images, save_npz, save_png_folder
from empirics.tasks import TaskBatch, generate
from paper_figs.cli import build_parser, main


def _same(a: TaskBatch, b: TaskBatch):
    np.testing.assert_array_equal(a.images, b.images)
    assert a.task is b.task and set(a.params) == set(b.params)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_npz_and_png_round_trip(tmp_path):
    batch = generate("B", 12, 32, seed=4)
    save_npz(batch, tmp_path / "b.npz")
    _same(batch, load_npz(tmp_path / "b.npz"))
    assert load_npz(tmp_path / "b.npz").meta["seed"] == 4
    save_png_folder(batch, tmp_path / "png")
    _same(batch, load_png_folder(tmp_path / "png"))
    # ImageFolder layout: one class folder of PNGs; params.csv with a file_name column
    pngs = sorted((tmp_path / "png" / "B").glob("*.png"))
    assert len(pngs) == 12 and cv2.imread(str(pngs[0])).shape == (32, 32, 3)
    with open(tmp_path / "png" / "params.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["file_name"] == "B/000000.png" and float(rows[3]["l1"]) == batch.params["l1"][3]
    with pytest.raises(ValueError, match="overwrite"):
        save_png_folder(batch, tmp_path / "png")
    save_png_folder(batch[:5], tmp_path / "png", overwrite=True)
    assert len(load_png_folder(tmp_path / "png")) == 5
    with pytest.raises(ValueError, match=".npz"):
        save_npz(batch, tmp_path / "b.txt")
    with pytest.raises(ValueError, match="overwrite"):
        save_npz(batch[:2], tmp_path / "b.npz")
    save_npz(batch[:2], tmp_path / "b.npz", overwrite=True)
    assert len(load_npz(tmp_path / "b.npz")) == 2
    with pytest.raises(ValueError, match="params.csv"):
        load_png_folder(tmp_path)


def test_written_files_honour_the_umask(tmp_path):
    """Results are readable by others (0644 / 0755 under umask 022), not private temporary-file modes."""
    import os

    from empirics import ddpm
    from paper_figs._io import write_json

    old = os.umask(0o022)
    try:
        batch = generate("A", 3, 32, seed=0)
        save_npz(batch, tmp_path / "a.npz")
        write_json(tmp_path / "x.json", {"a": 1})
        run = ddpm.create_run(tmp_path / "run", ddpm.make_config("A", "smoke", n_train=16, batch_size=4)).root
        ddpm.save_samples(batch.images, "A", tmp_path / "s", seeds=[0, 1, 2], meta={})
        for p in (tmp_path / "a.npz", tmp_path / "x.json", run / "config.json", run / "train.npz",
                  tmp_path / "s" / "samples.npz"):
            assert (p.stat().st_mode & 0o777) == 0o644, p
        for d in (run, tmp_path / "s"):
            assert (d.stat().st_mode & 0o777) == 0o755, d
    finally:
        os.umask(old)


def test_read_images_lists_odd_files(tmp_path):
    batch = generate("D", 3, 32, seed=0)
    save_png_folder(batch, tmp_path)
    (tmp_path / "D" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "D" / "notes.bin").write_bytes(b"\x00")
    cv2.imwrite(str(tmp_path / "D" / "wide.png"), np.full((32, 40, 3), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "D" / "tiny.png"), np.full((8, 8, 3), 255, np.uint8))
    rgba = np.dstack([batch.images[0][:, :, ::-1], np.full((32, 32), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "D" / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "D" / "grey.png"), np.full((32, 32), 128, np.uint8))
    s = read_images(tmp_path)
    reasons = dict(s.skipped)
    assert "unreadable" in reasons["D/broken.png"] and "not square" in reasons["D/wide.png"]
    assert "too small" in reasons["D/tiny.png"] and reasons["D/notes.bin"] == "not an image file"
    assert "params.csv" not in reasons
    assert "grayscale" in reasons["D/grey.png"]  # refused by name: the rules are read from colours
    assert s.files == ["D/000000.png", "D/000001.png", "D/000002.png", "D/rgba.png"]
    np.testing.assert_array_equal(s.images[3], batch.images[0])
    assert s.params is None                     # params.csv does not cover the extra images


def test_cli_data_and_eval(tmp_path, capsys):
    out = tmp_path / "A32"
    assert main(["data", "A", "--n", "40", "--size", "32", "--out", str(out), "--seed", "3"]) == 0
    assert (out / "params.csv").is_file() and (out / "A_32.npz").is_file()
    assert len(list((out / "A").glob("*.png"))) == 40
    (out / "A" / "broken.png").write_bytes(b"xx")
    assert main(["eval", "A", str(out), "--n-boot", "50"]) == 0
    res = tmp_path / "A32_eval"
    summary = json.loads((res / "summary.json").read_text())
    assert summary["n_images"] == 40 and summary["n_valid"] == 40 and summary["coarse_violations"] == 0
    assert summary["skipped"] == [{"file": "A/broken.png", "reason": "unreadable (not a decodable image)"}]
    assert summary["r2"] > 0.99 and "ci95" in summary
    lines = (res / "evaluation.jsonl").read_text().strip().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 40 and first["file"] == "A/000000.png" and first["valid"] is True
    assert set(first) >= {"file", "valid", "reason", "features", "ratio", "coarse_ok"}
    with open(res / "evaluation.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and rows[0]["valid"] == "True"
    assert float(rows[0]["ratio"]) == pytest.approx(first["ratio"])
    # the npz input, with ground truth: feature errors in pixels
    npz_out = tmp_path / "npz_eval"
    assert main(["eval", "A", str(out / "A_32.npz"), "--out", str(npz_out), "--n-boot", "0"]) == 0
    s2 = json.loads((tmp_path / "npz_eval" / "summary.json").read_text())
    assert s2["ground_truth_errors"]["all"]["median_px"] < 0.2
    # refuses to overwrite
    with pytest.raises(SystemExit) as info:
        main(["eval", "A", str(out)])
    assert info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_errors_and_parser(tmp_path):
    with pytest.raises(SystemExit):
        main(["data", "Z", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main(["eval", "A", str(tmp_path / "missing")])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["data", "C", "--n", "5", "--size", "8", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    parser = build_parser()                                    # full parser builds every verb
    args = parser.parse_args(["eval", "C", "somewhere", "--trim", "5", "95"])
    assert args.trim == [5.0, 95.0] and args.verb == "eval"
    assert main(["data", "D", "--n", "6", "--out", str(tmp_path / "d"), "--format", "npz"]) == 0
    assert (tmp_path / "d" / "D_32.npz").is_file() and not (tmp_path / "d" / "params.csv").exists()


def test_figure3_cli(tmp_path, capsys):
    assert main(["figure3", "--out", str(tmp_path), "--n", "60", "--n-boot", "20", "--tasks", "A", "C"]) == 0
    for name in ("figure3.png", "figure3.pdf", "figure3.json"):
        assert (tmp_path / name).stat().st_size > 0
    meta = json.loads((tmp_path / "figure3.json").read_text())
    assert set(meta["tasks"]) == {"A", "C"}
    assert meta["tasks"]["C"]["summary"]["r2"] > 0.99 and meta["tasks"]["A"]["n"] == 60
    assert "Task C" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["figure3", "--out", str(tmp_path), "--n", "60", "--tasks", "A"])


def test_read_images_keeps_task_seeds_and_truth_of_an_npz(tmp_path):
    """An npz with images + seeds + task (as `hidden-rules sample` writes it) keeps the seeds and the task
    and has no ground truth; a task archive keeps its params; malformed seeds or params are refused."""
    batch = generate("D", 4, 32, seed=3)
    np.savez(tmp_path / "s.npz", images=batch.images, seeds=np.array([9, 3, 7, 1]), task=np.array("D"))
    s = read_images(tmp_path / "s.npz")
    assert s.task.value == "D" and s.params is None and s.seeds.dtype == np.int64
    np.testing.assert_array_equal(s.seeds, [9, 3, 7, 1])
    save_npz(batch, tmp_path / "archive.npz")
    a = read_images(tmp_path / "archive.npz")
    assert a.seeds is None and a.task.value == "D" and set(a.params) == set(batch.params)
    np.testing.assert_array_equal(a.params["side_top"], batch.params["side_top"])
    np.savez(tmp_path / "other_task.npz", images=batch.images, task=np.array("not ours"))
    assert read_images(tmp_path / "other_task.npz").task is None  # a label that is not a task: images alone
    bad = {"short.npz": dict(seeds=np.arange(3)), "float.npz": dict(seeds=np.linspace(0, 1, 4)),
           "param.npz": dict(param__l1=np.zeros((4, 2)))}
    for name, extra in bad.items():
        np.savez(tmp_path / name, images=batch.images, **extra)
        with pytest.raises(ValueError, match=r"must hold one of (integers|numbers) per image \(4,\)"):
            read_images(tmp_path / name)
    with pytest.raises(AttributeError):  # ImageSet is frozen state
        s.task = None


def test_read_images_takes_seeds_from_a_sample_folder(tmp_path):
    """A folder written by ddpm.save_samples (PNGs + samples.csv + samples.npz) is read with its seeds."""
    from empirics import ddpm

    images = generate("B", 3, 32, seed=1).images
    ddpm.save_samples(images, "B", tmp_path / "set", seeds=[40, 41, 45], meta={})
    s = read_images(tmp_path / "set")
    assert s.files == ["B/000000.png", "B/000001.png", "B/000002.png"] and s.skipped == []
    np.testing.assert_array_equal(s.seeds, [40, 41, 45])
    np.testing.assert_array_equal(np.stack(s.images), images)
    (tmp_path / "set" / "B" / "extra.png").write_bytes((tmp_path / "set" / "B" / "000000.png").read_bytes())
    assert read_images(tmp_path / "set").seeds is None  # samples.csv no longer covers every image
