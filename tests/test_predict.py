"""`litpipe predict`: which model it uses, how it reads images, and how it fails.

One real model is trained on digits, checkpointed and exported once for the module
(tests/helpers/models.py, a few seconds). Each test lays out a directory like the
repository root (``models/best.ckpt``, ``models/export/``) and runs the command there:
through ``python -m litpipe.cli`` where the entry point itself matters, in-process through
``litpipe.predict.main`` for the many error cases. Where a test must show which model
answered, the other model in that directory is garbage, so using the wrong one fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litpipe.errors import InputFileError
from litpipe.images import MAX_PIXELS, read_image
from litpipe.predict import main, predict
from tests.helpers.images import bomb_png, png_bytes
from tests.helpers.models import build_models
from tests.helpers.repo import ROOT, pipeline_env

N_IMAGES = 6


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """processed/, models/ (checkpoint + export), 8-bit test digits and their classes."""
    import torch

    from litpipe.data.processed import load_split
    from litpipe.model.checkpoint import load_module

    base = tmp_path_factory.mktemp("predict")
    build_models(base)
    x, _ = load_split(base / "processed", "test")
    digits = np.array(x[:N_IMAGES])  # N×1×8×8 uint8
    for i, img in enumerate(digits):
        Image.fromarray(img[0]).save(base / f"img{i}.png")
    np.save(base / "digits.npy", digits)
    module = load_module(base / "models/best.ckpt")
    with torch.no_grad():
        expected = module(torch.from_numpy(digits).float() / 255).argmax(1).tolist()
    (base / "expected.json").write_text(json.dumps(expected))
    return base


def images(base: Path) -> list[str]:
    return [f"img{i}.png" for i in range(N_IMAGES)]


def expected(built: Path) -> list[int]:
    return json.loads((built / "expected.json").read_text())


def workspace(built: Path, dest: Path, *, ckpt: str = "good", onnx: str = "good") -> Path:
    """A directory like the repo root; each model is "good", "garbage" or "absent"."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in images(built):
        shutil.copy(built / name, dest / name)
    (dest / "models").mkdir()
    if ckpt == "good":
        shutil.copy(built / "models/best.ckpt", dest / "models/best.ckpt")
    elif ckpt == "garbage":
        (dest / "models/best.ckpt").write_bytes(b"not a checkpoint at all")
    if onnx != "absent":
        shutil.copytree(built / "models/export", dest / "models/export")
    if onnx == "garbage":
        (dest / "models/export/model.onnx").write_bytes(b"not an onnx model at all")
    return dest


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m litpipe.cli predict ARGS`` in ``cwd``: the real entry point."""
    return subprocess.run([sys.executable, "-m", "litpipe.cli", "predict", *args], cwd=cwd,
                          env=pipeline_env(), capture_output=True, text=True, timeout=300)


def run_main(cwd: Path, args: list[str], capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``litpipe predict ARGS`` in-process from ``cwd``: (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def classes_of(stdout: str) -> list[int]:
    data = json.loads(stdout)
    return [r["class_index"] for r in (data if isinstance(data, list) else [data])]


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and exactly one stderr line, ``litpipe predict: error: ...``, with fragments."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("litpipe predict: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err and "weights_only=False" not in err


# ------------------------------------------------------------------- model selection

def test_default_is_the_exported_onnx_model(built: Path, tmp_path: Path) -> None:
    """models/export/model.onnx answers by default: the checkpoint here is garbage, so a
    default that loaded it would fail; and the ONNX path never imports torch (its speed)."""
    ws = workspace(built, tmp_path / "ws", ckpt="garbage")
    proc = cli(ws, *images(built))
    assert proc.returncode == 0, proc.stderr
    assert classes_of(proc.stdout) == expected(built)
    assert "litpipe predict: onnx model models/export/model.onnx" in proc.stderr
    # The names are the right ones for the indices (digits' classes are "0" … "9", in the
    # model's output order), and the probability printed is the named class's.
    for r in json.loads(proc.stdout):
        assert list(r["probabilities"]) == [str(i) for i in range(10)], r
        assert r["class"] == str(r["class_index"]), r
        assert r["probability"] == r["probabilities"][r["class"]] == max(
            r["probabilities"].values()), r
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from litpipe.cli import main; "
         "code = main(['predict', 'img0.png']); "
         "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules)); "
         "sys.exit(code)"],
        cwd=ws, env=pipeline_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "[]"


def test_torchscript_export_names_no_path_of_this_checkout(built: Path) -> None:
    """``models/export/model.ts`` is a DVC output: the same model must be the same bytes in
    any clone, so the archive may not name where this checkout or its venv lives."""
    import zipfile

    import torch

    from litpipe.model.checkpoint import load_module

    path = built / "models/export/model.ts"
    checkout, venv = ROOT, Path(torch.__file__).parents[1]
    with zipfile.ZipFile(path) as archive:  # records read decompressed
        for name in archive.namelist():
            data = archive.read(name)
            for where in (checkout, venv):
                assert str(where).encode() not in data, (name, where)
    x = torch.from_numpy(np.load(built / "digits.npy")).float() / 255
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(path))(x),
                           load_module(built / "models/best.ckpt").net.eval()(x))


def test_checkpoint_on_request(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--checkpoint (no PATH) uses models/best.ckpt even though an export exists: the
    export here is garbage, so ignoring the flag would fail. By default the same directory
    fails on that export, in one line naming it."""
    ws = workspace(built, tmp_path / "ws", onnx="garbage")
    proc = cli(ws, *images(built), "--checkpoint")
    assert proc.returncode == 0, proc.stderr
    assert classes_of(proc.stdout) == expected(built)
    assert "litpipe predict: checkpoint model models/best.ckpt" in proc.stderr
    code, _, err = run_main(ws, images(built), capsys, monkeypatch)
    assert_one_line_error(code, err, "models/export/model.onnx: not a loadable ONNX model",
                          "dvc repro export")


def test_onnx_and_checkpoint_agree(built: Path) -> None:
    files = [built / name for name in images(built)]
    by_onnx = predict(files, onnx=built / "models/export/model.onnx")
    by_ckpt = predict(files, checkpoint=built / "models/best.ckpt")
    assert [r["class_index"] for r in by_onnx] == expected(built)
    assert [r["class_index"] for r in by_ckpt] == expected(built)
    for a, b in zip(by_onnx, by_ckpt, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
        assert sum(a["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_explicit_paths_and_fallbacks(built: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # --onnx PATH and --checkpoint PATH anywhere.
    ws = workspace(built, tmp_path / "elsewhere", ckpt="absent", onnx="absent")
    shutil.copytree(built / "models", ws / "other")
    code, out, err = run_main(ws, ["img0.png", "--onnx", "other/export/model.onnx"], capsys,
                              monkeypatch)
    assert code == 0 and classes_of(out) == expected(built)[:1], err
    code, out, err = run_main(ws, ["--checkpoint", "other/best.ckpt", "img1.png"], capsys,
                              monkeypatch)
    assert code == 0 and classes_of(out) == expected(built)[1:2], err
    # Nothing in models/: one line saying what to run.
    code, _, err = run_main(ws, ["img0.png"], capsys, monkeypatch)
    assert_one_line_error(code, err, "no model to predict with", "models/export/model.onnx",
                          "models/best.ckpt", "dvc repro")
    # No export yet (only `dvc repro train` ran): the checkpoint answers.
    ws2 = workspace(built, tmp_path / "trained-only", onnx="absent")
    code, out, err = run_main(ws2, ["img2.png"], capsys, monkeypatch)
    assert code == 0 and classes_of(out) == expected(built)[2:3], err
    assert "checkpoint model models/best.ckpt" in err
    # `--checkpoint img.png`: the optional PATH took an image; it is read as one.
    code, out, err = run_main(ws2, ["--checkpoint", "img3.png"], capsys, monkeypatch)
    assert code == 0 and classes_of(out) == expected(built)[3:4], err


def test_help_documents_the_defaults_and_image_handling(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("models/export/model.onnx when it exists", "models/best.ckpt",
                     "16-bit images are scaled to 8 bit", "composited on a black background",
                     f"{MAX_PIXELS:,} pixels are refused"):
        assert fragment in text, fragment


# ------------------------------------------------------------------------- bad models

def _edit_meta(meta: dict, case: str) -> str | dict | list:
    if case == "not-json":
        return "{\"task\": \"classification\", "
    if case == "empty":
        return ""
    if case == "not-an-object":
        return [1, 2]
    if case == "missing-key":
        del meta["input"]["shape"]
    elif case == "missing-section":
        del meta["output"]
    elif case == "bad-shape":
        meta["input"]["shape"] = ["batch", 8, 8]
    elif case == "other-shape":
        meta["input"]["shape"] = ["batch", 1, 28, 28]
    elif case == "fewer-classes":
        meta["output"]["classes"] = ["a", "b"]
    elif case == "bad-task":
        meta["task"] = "segmentation"
    elif case == "renamed-input":
        meta["input"]["name"] = "pixels"
    return meta


META_CASES = {
    "not-json": "not valid JSON (Expecting property name",
    "empty": "not valid JSON (Expecting value at line 1, column 1)",
    "not-an-object": "expected a JSON object, got list",
    "missing-key": "missing key 'input.shape'",
    "missing-section": "missing key 'output.classes'",
    "bad-shape": "'input.shape' is ['batch', 8, 8], expected [batch, channels, height, width]",
    "bad-task": "'task' is 'segmentation'",
    "other-shape": "it takes ['batch', 1, 8, 8], but models/export/model.json says "
                   "['batch', 1, 28, 28]",
    "fewer-classes": "it outputs ['batch', 10], but models/export/model.json names 2 classes",
    "renamed-input": "its inputs are ['images'], but models/export/model.json says ['pixels']",
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_corrupt_model_json_is_one_line(built: Path, tmp_path: Path, case: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(built, tmp_path / "ws")
    meta_path = ws / "models/export/model.json"
    edited = _edit_meta(json.loads(meta_path.read_text()), case)
    meta_path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    code, out, err = run_main(ws, ["img0.png"], capsys, monkeypatch)
    # A disagreement between the two files is reported on model.onnx, naming model.json.
    pair = case in ("other-shape", "fewer-classes", "renamed-input")
    named = "models/export/model.onnx: " if pair else "models/export/model.json: "
    assert_one_line_error(code, err, named, META_CASES[case], "dvc repro export")
    assert out == ""


def test_missing_model_json(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(built, tmp_path / "ws")
    (ws / "models/export/model.json").unlink()
    code, _, err = run_main(ws, ["img0.png"], capsys, monkeypatch)
    assert_one_line_error(code, err, "models/export/model.json: missing", "dvc repro export")


@pytest.mark.parametrize("case", ["truncated", "empty", "garbage"])
def test_corrupt_model_onnx_is_one_line(built: Path, tmp_path: Path, case: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(built, tmp_path / "ws")
    onnx = ws / "models/export/model.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes({"truncated": data[: len(data) // 3], "empty": b"",
                      "garbage": bytes(range(256)) * 8}[case])
    code, _, err = run_main(ws, ["img0.png"], capsys, monkeypatch)
    what = "empty file (0 bytes)" if case == "empty" else "not a loadable ONNX model"
    assert_one_line_error(code, err, f"models/export/model.onnx: {what}", "dvc repro export")


def test_corrupt_checkpoint_is_one_line(built: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint's own errors (tests/model/test_checkpoint.py) reach the user as one line."""
    ws = workspace(built, tmp_path / "ws", onnx="absent")
    ckpt = ws / "models/best.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    code, _, err = run_main(ws, ["img0.png"], capsys, monkeypatch)
    assert_one_line_error(code, err, "models/best.ckpt: truncated or corrupted checkpoint",
                          "dvc repro train", "dvc pull")


# ----------------------------------------------------------------------------- images

def test_decompression_bomb_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, built: Path) -> None:
    """16000×16000 pixels in a 30 kB file: refused from its header, before decoding."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 123_456_789)  # someone else's setting
    with pytest.raises(InputFileError, match=r"bomb\.png: refused: 256,000,000 pixels, over the "
                                           r"limit of 50,000,000"):
        read_image(bomb, (1, 8, 8))
    assert Image.MAX_IMAGE_PIXELS == 123_456_789  # Pillow's global is left as it was
    read_image(built / "img0.png", (1, 8, 8))
    assert Image.MAX_IMAGE_PIXELS == 123_456_789
    # Between the limit and twice it, Pillow only warns: still refused.
    (tmp_path / "big.png").write_bytes(bomb_png(8000))
    with pytest.raises(InputFileError, match="refused: 64,000,000 pixels"):
        read_image(tmp_path / "big.png", (1, 8, 8))
    ws = workspace(built, tmp_path / "ws")
    shutil.copy(bomb, ws / "bomb.png")
    code, _, err = run_main(ws, ["img0.png", "bomb.png"], capsys, monkeypatch)
    assert_one_line_error(code, err, "bomb.png: refused", "decompression bomb")


@pytest.mark.parametrize("case", ["missing", "text", "directory", "truncated",
                                  "truncated-rgb16", "float"])
def test_unreadable_images_are_one_line(built: Path, tmp_path: Path, case: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace(built, tmp_path / "ws")
    bad = ws / "bad.png"
    if case == "text":
        bad.write_text("hello")
    elif case == "directory":
        bad.mkdir()
    elif case == "truncated":
        bad.write_bytes((ws / "img0.png").read_bytes()[:60])
    elif case == "truncated-rgb16":  # the torchvision decoder's failure, reported alike
        bad.write_bytes(png_bytes(np.full((8, 8, 3), 40000, np.uint16), 2, 16)[:60])
    elif case == "float":
        bad = ws / "bad.tif"
        Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(bad)
    code, out, err = run_main(ws, ["img0.png", bad.name], capsys, monkeypatch)
    why = {"missing": "no such file", "text": "not a readable image",
           "directory": "a directory", "truncated": "not a readable image",
           "truncated-rgb16": "not a readable image (corrupt PNG data",
           "float": "floating-point pixels"}[case]
    assert_one_line_error(code, err, f"{bad.name}: {why}")
    assert out == ""


def test_16bit_and_transparent_versions_predict_like_the_8bit_digit(built: Path,
                                                                     tmp_path: Path) -> None:
    """The same digits as 8-bit PNGs, 16-bit grey and RGB PNGs, and white ink on a
    transparent canvas: identical classes and probabilities."""
    digits = np.load(built / "digits.npy")[:, 0]  # N×8×8 uint8
    eight, sixteen, rgb16, ink = [], [], [], []
    for i, d in enumerate(digits):
        eight.append(tmp_path / f"d{i}.png")
        Image.fromarray(d).save(eight[-1])
        sixteen.append(tmp_path / f"d{i}-16.png")
        Image.fromarray(d.astype(np.uint16) * 257).save(sixteen[-1])
        rgb16.append(tmp_path / f"d{i}-rgb16.png")
        rgb16[-1].write_bytes(png_bytes(np.stack([d.astype(np.uint16) * 257] * 3, -1), 2, 16))
        ink.append(tmp_path / f"d{i}-ink.png")
        Image.fromarray(np.stack([np.full_like(d, 255), d], -1), "LA").save(ink[-1])
    onnx = built / "models/export/model.onnx"
    base = predict(eight, onnx=onnx)
    assert [r["class_index"] for r in base] == expected(built)
    for variant in (sixteen, rgb16, ink):
        got = predict(variant, onnx=onnx)
        assert [r["class_index"] for r in got] == [r["class_index"] for r in base]
        assert [r["probabilities"] for r in got] == [r["probabilities"] for r in base]
    by_ckpt = predict(sixteen, checkpoint=built / "models/best.ckpt")
    assert [r["class_index"] for r in by_ckpt] == expected(built)
