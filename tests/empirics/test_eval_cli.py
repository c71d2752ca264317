"""`hidden-rules eval` as a tool others script: what it reads, what it refuses (and says why), and that
its stderr holds only its own words. Table-driven bad input is in tests/test_cli_bad_input.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cli.data_eval import flag_words
from empirics.data.io import GRAYSCALE_REASON, load_npz, read_images, save_npz, save_png_folder
from empirics.evaluate import as_float_rgb
from empirics.tasks import TaskBatch, generate
from paper_figs.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))  # a PNG signature, then garbage: OpenCV logs about it


def _grey_files(folder: Path) -> list[str]:
    """Single-channel images in every form we meet: 8- and 16-bit grey PNG, grey + alpha PNG, grey JPEG."""
    cv2.imwrite(str(folder / "grey8.png"), np.full((32, 32), 200, np.uint8))
    cv2.imwrite(str(folder / "grey16.png"), np.full((32, 32), 50000, np.uint16))
    Image.fromarray(np.full((32, 32), 200, np.uint8), mode="L").save(folder / "pil_l.png")
    Image.fromarray(np.full((32, 32, 2), 200, np.uint8), mode="LA").save(folder / "pil_la.png")
    cv2.imwrite(str(folder / "grey.jpg"), np.full((32, 32), 200, np.uint8))
    return ["grey.jpg", "grey16.png", "grey8.png", "pil_l.png", "pil_la.png"]


def test_grayscale_files_are_refused_by_name(tmp_path):
    names = _grey_files(tmp_path)
    cv2.imwrite(str(tmp_path / "rgb.png"), generate("C", 1, 32, seed=0).images[0][:, :, ::-1])
    s = read_images(tmp_path)
    assert s.files == ["rgb.png"]
    assert dict(s.skipped) == {n: GRAYSCALE_REASON for n in names}
    assert "grayscale" in GRAYSCALE_REASON and "RGB" in GRAYSCALE_REASON
    one = read_images(tmp_path / "pil_l.png")  # a single file: listed as skipped, not raised
    assert one.images == [] and one.skipped == [("pil_l.png", GRAYSCALE_REASON)]


@pytest.mark.parametrize("images, words", [
    (np.zeros((5, 32, 32), np.uint8), ["images have shape (5, 32, 32)", "single-channel (grayscale)",
                                       "expected RGB images (N, S, S, 3)"]),
    (np.zeros((2, 32, 32, 1), np.uint8), ["shape (2, 32, 32, 1)", "single-channel (grayscale)"]),
    (np.zeros((2, 1, 32, 32), np.float32), ["shape (2, 1, 32, 32)", "single-channel (grayscale)"]),
    (np.zeros((32, 32), np.uint8), ["shape (32, 32)", "single-channel (grayscale)"]),
    (np.zeros((2, 32, 32, 4), np.uint8), ["shape (2, 32, 32, 4)", "RGBA"]),
    (np.zeros((2, 32, 32, 2), np.uint8), ["2 channels", "grayscale with alpha"]),
    (np.zeros((2, 32, 32, 7), np.uint8), ["7 channels, not 3"]),
    (np.zeros((0, 32, 32, 3), np.uint8), ["images is empty: shape (0, 32, 32, 3)"]),
    (np.full((1, 32, 32, 3), 300, np.int32), ["pass value_range=(lo, hi)"]),
    (np.full((1, 32, 32, 3), 200.0), ["pass value_range=(lo, hi)"]),
])
def test_as_float_rgb_says_what_the_array_is(images, words):
    with pytest.raises(ValueError) as info:
        as_float_rgb(images)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_npz_inputs_are_read_or_refused_with_our_message(tmp_path):
    np.savez(tmp_path / "gray.npz", images=np.zeros((5, 32, 32), np.uint8))
    np.savez(tmp_path / "gray1.npz", images=np.zeros((4, 32, 32, 1), np.uint8))
    np.savez(tmp_path / "none.npz", images=np.zeros((0, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "objects.npz", images=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "other.npz", pictures=np.zeros((2, 32, 32, 3), np.uint8))
    np.save(tmp_path / "array.npy", np.zeros((2, 32, 32, 3), np.uint8))
    (tmp_path / "array.npy").rename(tmp_path / "npy.npz")
    (tmp_path / "text.npz").write_text("hello")
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:
        z.writestr("images.npy", b"raw bytes")
    save_npz(TaskBatch(np.zeros((0, 32, 32, 3), np.uint8), {}, "A"), tmp_path / "task0.npz")
    cases = {
        "gray.npz": "gray.npz': images have shape (5, 32, 32): single-channel (grayscale) images",
        "gray1.npz": "images have shape (4, 32, 32, 1): single-channel (grayscale) images",
        "none.npz": "images is empty: shape (0, 32, 32, 3)",
        "task0.npz": "images is empty: shape (0, 32, 32, 3)",
        "objects.npz": "the array 'images' holds Python objects",
        "other.npz": "has no 'images' array (it holds ['pictures'])",
        "npy.npz": "is not an .npz archive (not a zip file)",
        "text.npz": "is not an .npz archive (not a zip file)",
        "raw.npz": "'images' is not a numpy array (.npy)",
    }
    for name, message in cases.items():
        with pytest.raises(ValueError) as info:
            read_images(tmp_path / name)
        assert message in str(info.value), (name, str(info.value))
        assert "allow_pickle" not in str(info.value) and "unpickl" not in str(info.value)
    for name in ("objects.npz", "text.npz", "npy.npz", "raw.npz"):  # the task-archive reader says the same
        with pytest.raises(ValueError, match="Python objects|not an .npz archive|not a numpy array") as info:
            load_npz(tmp_path / name)
        assert "allow_pickle" not in str(info.value)
    # what an array may be: NHWC, NCHW, one image, float; each image comes back [S, S, 3]
    imgs = generate("C", 3, 32, seed=1).images
    np.savez(tmp_path / "nchw.npz", images=imgs.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "one.npz", images=imgs[0])
    np.savez(tmp_path / "float.npz", images=imgs / 127.5 - 1.0)
    for name, n in (("nchw.npz", 3), ("one.npz", 1), ("float.npz", 3)):
        s = read_images(tmp_path / name)
        assert s.files == [f"{name}#{i}" for i in range(n)] and s.params is None
        assert all(im.shape == (32, 32, 3) for im in s.images)
    np.testing.assert_array_equal(read_images(tmp_path / "nchw.npz").images[2], imgs[2])


def test_paths_are_checked():
    for bad in (None, 3, ""):
        with pytest.raises(ValueError, match="path must be a path"):
            read_images(bad)
        with pytest.raises(ValueError, match="path must be a path"):
            load_npz(bad)


def test_opencv_log_level_is_restored(tmp_path):
    (tmp_path / "bad.png").write_bytes(CORRUPT_PNG)
    level = cv2.utils.logging.getLogLevel()
    assert read_images(tmp_path).skipped == [("bad.png", "unreadable (not a decodable image)")]
    assert cv2.utils.logging.getLogLevel() == level


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "paper_figs.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=cwd)


def test_eval_lists_every_file_it_skips_and_stderr_is_ours(tmp_path):
    """A folder with good images, a corrupt PNG, a grey PNG and an unknown file: the run goes on; each
    skipped file is printed with its reason and kept in summary.json; OpenCV prints nothing."""
    data = tmp_path / "data"
    save_png_folder(generate("A", 4, 32, seed=2), data)
    (data / "A" / "corrupt.png").write_bytes(CORRUPT_PNG)
    cv2.imwrite(str(data / "A" / "grey.png"), np.full((32, 32), 200, np.uint8))
    (data / "A" / "notes.bin").write_bytes(b"\x00\x01")
    (data / "README.md").write_text("a companion file: passed over")
    res = _run_cli(["eval", "A", str(data), "--out", str(tmp_path / "out"), "--n-boot", "0", "--workers", "1"],
                   tmp_path)
    assert res.returncode == 0, res.stderr
    skipped = {"A/corrupt.png": "unreadable (not a decodable image)", "A/grey.png": GRAYSCALE_REASON,
               "A/notes.bin": "not an image file"}
    assert res.stderr.splitlines() == [f"skipped {f}: {r}" for f, r in skipped.items()]
    assert "4 images evaluated, 4 valid, 3 skipped" in res.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"] == [{"file": f, "reason": r} for f, r in skipped.items()]
    assert summary["n_files"] == 4 and summary["n_valid"] == 4


def test_eval_exits_2_when_nothing_is_left(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.png").write_bytes(CORRUPT_PNG)
    cv2.imwrite(str(folder / "grey.png"), np.full((32, 32), 9, np.uint8))
    with pytest.raises(SystemExit) as info:
        main(["eval", "A", str(folder), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no image could be read from" in err and "(8 skipped: 0.png: unreadable" in err
    assert "; and 3 more)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_messages_name_flags_not_keywords(tmp_path, capsys):
    np.savez(tmp_path / "f.npz", images=np.full((2, 32, 32, 3), 200.0))
    np.savez(tmp_path / "i.npz", images=np.full((2, 32, 32, 3), 300, np.int32))
    for name in ("f.npz", "i.npz"):
        with pytest.raises(SystemExit) as info:
            main(["eval", "A", str(tmp_path / name), "--out", str(tmp_path / "out"), "--overwrite"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "pass --value-range LO HI" in err and "value_range" not in err
    # the advice works: the same file with the flag is evaluated
    assert main(["eval", "A", str(tmp_path / "f.npz"), "--out", str(tmp_path / "out"), "--overwrite",
                 "--value-range", "0", "255", "--n-boot", "0"]) == 0
    for argv, flag in ((["--value-range", "0", "nan"], "--value-range must be"),
                       (["--workers", "65"], "--workers must be an integer in [1, 64]"),
                       (["--trim", "10", "10"], "--trim must be two percentiles LO HI")):
        with pytest.raises(SystemExit):
            main(["eval", "A", str(tmp_path / "f.npz"), "--out", str(tmp_path / "out2"), *argv])
        err = capsys.readouterr().err
        assert flag in err and "value_range" not in err and "trim must" not in err.replace("--trim must", "")
    # the words are translated, the sense is kept
    assert flag_words("pass value_range=(lo, hi) for another range") == "pass --value-range LO HI for another range"
    assert flag_words("workers must be >= 1, got 0") == "--workers must be >= 1, got 0"
    assert flag_words("n_boot must be >= 0; images must be RGB") == "--n-boot must be >= 0; images must be RGB"


# ---- issue 22, item 7: eval of any npz with images (what `hidden-rules sample` writes), task mismatch,
# and nothing left behind on a failure

def _sample_npz(path: Path, task: str = "C", n: int = 6, seed: int = 5, **extra) -> np.ndarray:
    """An npz as `hidden-rules sample` writes it: images, seeds (not 0..n-1, so a row cannot get its index
    by accident), task."""
    images = generate(task, n, 32, seed=seed).images
    np.savez(path, images=images, seeds=np.arange(n, dtype=np.int64) * 7 + 100, task=np.array(task), **extra)
    return images


def test_eval_of_a_sample_npz_rows_carry_seeds(tmp_path, capsys):
    """The committed sample sets' layout (images + seeds + task, no ground truth) is evaluated; each row
    carries its seed; the summary is the library's summary of the same images."""
    from empirics.evaluate import evaluate

    images = _sample_npz(tmp_path / "samples_C.npz")
    out = tmp_path / "out"
    assert main(["eval", "C", str(tmp_path / "samples_C.npz"), "--out", str(out), "--n-boot", "20",
                 "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = evaluate(images, "C").summary(n_boot=20, seed=0)
    assert summary["n_images"] == 6 and summary["n_valid"] == expected["n_valid"] == 6
    assert summary["r2"] == pytest.approx(expected["r2"], rel=1e-12)
    assert summary["error"] == pytest.approx(expected["error"], rel=1e-12)
    assert summary["input_task"] == "C" and summary["seeds"] is True
    assert "ground_truth_errors" not in summary  # no param__ arrays: nothing to compare against
    rows = [json.loads(line) for line in (out / "evaluation.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [100 + 7 * i for i in range(6)]
    assert [r["file"] for r in rows] == [f"samples_C.npz#{i}" for i in range(6)]
    assert list(rows[0])[:3] == ["file", "seed", "valid"]
    with open(out / "evaluation.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["seed"]) for r in table] == [100 + 7 * i for i in range(6)]
    assert "R^2 = " in capsys.readouterr().out


def test_eval_ground_truth_only_with_the_rule_features(tmp_path):
    """param__ arrays that lack the task's rule features (C: r_small, r_large) give no feature errors and
    no failure; with them, the errors are there."""
    batch = generate("C", 4, 32, seed=2)
    np.savez(tmp_path / "part.npz", images=batch.images, task=np.array("C"), param__r_small=batch.params["r_small"])
    np.savez(tmp_path / "full.npz", images=batch.images, task=np.array("C"),
             **{f"param__{k}": v for k, v in batch.params.items()})
    for name, has in (("part", False), ("full", True)):
        out = tmp_path / f"{name}_out"
        assert main(["eval", "C", str(tmp_path / f"{name}.npz"), "--out", str(out), "--n-boot", "0"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert ("ground_truth_errors" in summary) is has, name
        assert "seed" not in json.loads((out / "evaluation.jsonl").read_text().splitlines()[0])
    errors = json.loads((tmp_path / "full_out" / "summary.json").read_text())["ground_truth_errors"]
    assert set(errors) == {"r_small", "r_large", "all"} and errors["all"]["median_px"] < 0.2


def test_eval_refuses_an_input_of_another_task(tmp_path, capsys):
    """An npz labelled D (or a folder whose params.csv says D) evaluated as C: exit 2, one line naming both
    tasks, no output folder. The evaluator alone would call D renders valid C images."""
    _sample_npz(tmp_path / "d.npz", task="D", n=3)
    save_png_folder(generate("D", 3, 32, seed=1), tmp_path / "dpng")
    for src, where in ((tmp_path / "d.npz", "its 'task' entry"), (tmp_path / "dpng", "its params.csv")):
        out = tmp_path / "out" / "nested"
        with pytest.raises(SystemExit) as info:
            main(["eval", "C", str(src), "--out", str(out)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"holds task D images ({where}), not task C" in err and "eval D" in err
        assert not (tmp_path / "out").exists()
    # the same images without a label are measured as C, on purpose
    np.savez(tmp_path / "unlabelled.npz", images=np.load(tmp_path / "d.npz")["images"])
    assert main(["eval", "C", str(tmp_path / "unlabelled.npz"), "--out", str(tmp_path / "asC"), "--n-boot", "0"]) == 0
    assert json.loads((tmp_path / "asC" / "summary.json").read_text())["input_task"] is None


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("failure, status", [(RuntimeError("injected"), 1), (KeyboardInterrupt(), 130),
                                             (ValueError("injected"), 2)])
def test_eval_leaves_no_folder_when_evaluation_fails(tmp_path, monkeypatch, capsys, failure, status):
    """An exception (or Ctrl-C) in the middle of the evaluation leaves neither the --out folder nor its
    parents nor a temporary folder behind."""
    import cli.data_eval as cli

    _sample_npz(tmp_path / "s.npz", n=2)
    before = _listing(tmp_path)

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(cli, "evaluate", broken)
    try:
        code = main(["eval", "C", str(tmp_path / "s.npz"), "--out", str(tmp_path / "a" / "b")])
    except SystemExit as exc:
        code = exc.code
    assert code == status
    assert "injected" in capsys.readouterr().err or status == 130
    assert _listing(tmp_path) == before


def test_eval_leaves_no_folder_when_writing_fails(tmp_path, monkeypatch):
    """A failure while the outputs are written (after the first file): the half-written folder is removed;
    an existing folder with other files keeps exactly its files."""
    import cli.data_eval as cli
    import empirics.atomic as atomic

    _sample_npz(tmp_path / "s.npz", n=2)
    real, calls = atomic.atomic_write_bytes, []

    def second_write_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device (injected)")
        real(path, data)

    monkeypatch.setattr(cli, "atomic_write_bytes", second_write_fails)
    before = _listing(tmp_path)
    assert main(["eval", "C", str(tmp_path / "s.npz"), "--out", str(tmp_path / "new"), "--n-boot", "0"]) == 1
    assert len(calls) == 2 and _listing(tmp_path) == before
    (tmp_path / "empty").mkdir()  # an empty folder given as --out stays as it was
    calls.clear()
    assert main(["eval", "C", str(tmp_path / "s.npz"), "--out", str(tmp_path / "empty"), "--n-boot", "0"]) == 1
    assert _listing(tmp_path / "empty") == []


def test_eval_checks_out_before_evaluating(tmp_path, monkeypatch, capsys):
    """Existing outputs are refused before any image is measured (no wait for a refusal)."""
    import cli.data_eval as cli

    _sample_npz(tmp_path / "s.npz", n=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")
    (tmp_path / "out" / "notes.txt").write_text("mine")

    def not_called(*args, **kwargs):
        raise AssertionError("evaluated before --out was checked")

    monkeypatch.setattr(cli, "evaluate", not_called)
    with pytest.raises(SystemExit) as info:
        main(["eval", "C", str(tmp_path / "s.npz"), "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["eval", "C", str(tmp_path / "s.npz"), "--out", str(tmp_path / "out"), "--overwrite",
                 "--n-boot", "0"]) == 0
    assert _listing(tmp_path / "out") == ["evaluation.csv", "evaluation.jsonl", "notes.txt", "summary.json"]
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_images"] == 2
