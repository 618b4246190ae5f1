"""Errors without tracebacks: a DataError, BundleError or FlagError (and nothing else) becomes one paragraph on
stderr (what is wrong, which file, how to fix it) and a non-zero exit, in every nerfdiff-* command
and in ns-train with our methods.

Each kind of bad input (missing / corrupt image, camera file, mask, bundle) goes through the real
code path in-process (cheap); every console script and ns-train run once or twice as subprocesses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfdiff_ns.cli import EXIT_USER_ERROR, format_user_error, friendly_errors, is_user_error
from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.errors import FlagError

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
SHIPPED = Path(__file__).resolve().parents[1] / "nerfdiff_ns" / "assets" / "bundle-tiny"


def assert_clean_error(stderr: str, *needles: str) -> None:
    """One paragraph naming the problem, the file and a fix; no Python traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if re.match(r"^[\w.-]+: error:", line)]
    assert len(error_lines) == 1, stderr[-3000:]
    paragraph = stderr[stderr.index(error_lines[0]):]
    for needle in needles:
        assert needle in paragraph.replace("\n  ", " "), (needle, paragraph)


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A good photo, and broken versions of every input a user hands us."""
    rng = np.random.default_rng(0)
    photo = np.full((60, 80, 3), 200, np.uint8)
    photo[20:40, 30:50] = rng.integers(0, 120, (20, 20, 3))
    Image.fromarray(photo).save(tmp_path / "photo.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "corrupt_camera.json").write_text('{"fov_degrees": 45,')
    (tmp_path / "corrupt_mask.png").write_bytes(b"GIF89a broken")
    bad_bundle = tmp_path / "corrupt_bundle"
    bad_bundle.mkdir()
    (bad_bundle / "config.json").write_text("{ not json")
    return {"photo": tmp_path / "photo.png", "corrupt_image": tmp_path / "corrupt.png",
            "corrupt_camera": tmp_path / "corrupt_camera.json", "corrupt_mask": tmp_path / "corrupt_mask.png",
            "corrupt_bundle": bad_bundle, "missing": tmp_path / "missing.png", "missing_bundle": tmp_path / "no_bundle"}


def test_only_our_errors_are_reformatted(capsys: pytest.CaptureFixture[str]) -> None:
    from nerfdiff_ns.bundle import BundleError

    def fail(exc: BaseException):
        def main():
            raise exc
        return main

    with pytest.raises(SystemExit) as info:
        friendly_errors(fail(DataError("/data/photo.png", "input image not found", "pass an existing PNG/JPG with --data")), "nerfdiff-x")
    assert info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "nerfdiff-x: error: /data/photo.png: input image not found. Fix: pass an existing PNG/JPG with --data\n"
    with pytest.raises(SystemExit):
        friendly_errors(fail(BundleError("bundle folder /b does not exist. Train one with `nerfdiff-pretrain`.")), "nerfdiff-x")
    assert "nerfdiff-x: error: bundle folder /b does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        friendly_errors(fail(FlagError("--video-frames must be >= 1 (or pass --no-videos)")), "nerfdiff-x")
    assert capsys.readouterr().err == "nerfdiff-x: error: --video-frames must be >= 1 (or pass --no-videos)\n"
    # anything else is a bug, and keeps its traceback: a plain ValueError, a KeyError, Ctrl-C
    for other in (ValueError("bad"), KeyError("k"), KeyboardInterrupt()):
        with pytest.raises(type(other)):
            friendly_errors(fail(other), "nerfdiff-x")
    assert not is_user_error(RuntimeError("x"))
    # long messages wrap at 100 columns without splitting a path
    long_path = "/a/very/long/path/" + "x" * 90 + ".png"
    long = DataError(long_path, "could not read image " * 5, "replace it")
    text = format_user_error(long, "nerfdiff-x")
    lines = text.splitlines()
    assert len(lines) >= 3 and all(line.startswith("  ") for line in lines[1:])  # wrapped, continuation indented
    assert [line for line in lines if long_path in line] == [f"  {long_path}:"]  # the path whole, on a line of its own
    assert all(len(line) <= 100 for line in lines if long_path not in line)
    assert " ".join(text.split()) == "nerfdiff-x: error: " + " ".join(str(long).split())  # nothing lost


def test_excepthook_handles_only_our_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from nerfdiff_ns import compat
    from nerfdiff_ns.bundle import BundleError

    seen = []
    hook = compat.make_excepthook(lambda *args: seen.append(args[0]))
    hook(DataError, DataError("/m.png", "mask not found", "pass --mask"), None)
    hook(BundleError, BundleError("bundle folder /b does not exist."), None)
    err = capsys.readouterr().err
    assert ": error: /m.png: mask not found. Fix: pass --mask" in err and ": error: bundle folder /b" in err
    assert seen == []
    hook(KeyError, KeyError("k"), None)
    hook(SystemExit, SystemExit(3), None)
    assert seen == [KeyError, SystemExit]
    # install() wraps the hook once, however often nerfstudio loads our entry points
    saved = sys.excepthook
    try:
        compat.install_excepthook()
        first = sys.excepthook
        compat.install_excepthook()
        assert sys.excepthook is first and getattr(first, "nerfdiff_user_errors", False)
    finally:
        sys.excepthook = saved


@pytest.mark.parametrize("case", ["missing_image", "corrupt_image", "missing_camera", "corrupt_camera",
                                  "missing_mask", "corrupt_mask", "missing_bundle", "corrupt_bundle"])
def test_every_bad_input_reads_as_one_paragraph(case: str, inputs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The nerfdiff-image dataparser (what ns-train and nerfdiff-sample run) on each kind of bad input."""
    from nerfdiff_ns.data.dataparsers import SingleImageDataParserConfig

    kwargs = {"data": inputs["photo"], "bundle": SHIPPED, "cache_dir": tmp_path / "cache"}
    kind, what = case.split("_")
    target = {"image": "data", "camera": "camera_file", "mask": "mask", "bundle": "bundle"}[what]
    path = inputs["missing_bundle" if case == "missing_bundle" else "missing"] if kind == "missing" else inputs[f"corrupt_{what}"]
    kwargs[target] = path
    with pytest.raises(SystemExit) as info:
        friendly_errors(lambda: SingleImageDataParserConfig(**kwargs).setup().get_dataparser_outputs("train"), "ns-train")
    assert info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert_clean_error(err, str(path))
    assert ("Fix:" in err) or ("re-export" in err) or ("Train one" in err)


def test_a_missing_relative_image_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's config.yml keeps --data as ns-train got it, so ns-render / nerfdiff-export started from another folder
    miss a relative photo: the error names the folder it was read from and where to run them."""
    from nerfdiff_ns.data.dataparsers import check_image_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=f"read from the current folder, {re.escape(str(tmp_path))}.*folder ns-train ran in"):
        check_image_path("photo.png", "--data")
    with pytest.raises(DataError) as info:  # another command's flag: no word about runs
        check_image_path("photo.png", "--image")
    assert "with --image (a relative path is read from the current folder" in str(info.value) and "ns-train" not in str(info.value)
    with pytest.raises(DataError) as info:  # an absolute path needs no hint
        check_image_path(tmp_path / "photo.png", "--data")
    assert str(info.value).endswith("Fix: pass an existing PNG/JPG with --data")


def test_prepare_cli_bad_inputs(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run([str(BIN / "nerfdiff-prepare"), str(inputs["corrupt_image"]), "--output-dir", str(out)], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-prepare: error:", str(inputs["corrupt_image"]), "could not read image", "Fix:")
    proc = run([str(BIN / "nerfdiff-prepare"), str(inputs["photo"]), "--mask", str(inputs["missing"]), "--bundle",
                str(inputs["corrupt_bundle"]), "--output-dir", str(out)], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR  # the bundle is read first
    assert_clean_error(proc.stderr, str(inputs["corrupt_bundle"] / "config.json"), "not valid JSON", "re-export")
    assert not out.exists()


def test_sample_cli_bad_bundle(inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = run([str(BIN / "nerfdiff-sample"), "--image", str(inputs["photo"]), "--bundle", str(inputs["missing_bundle"]),
                "--output-dir", str(tmp_path / "s")], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-sample: error:", str(inputs["missing_bundle"]), "does not exist")


def test_eval_cli_missing_data(tmp_path: Path) -> None:
    proc = run([str(BIN / "nerfdiff-eval"), "--data", str(tmp_path / "no_split"), "--output-dir", str(tmp_path / "e")], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-eval: error:", str(tmp_path / "no_split"), "not found", "Fix:")


def test_pretrain_cli_missing_data(tmp_path: Path) -> None:
    proc = run([str(BIN / "nerfdiff-pretrain"), "--data", str(tmp_path / "no_data"), "--output-dir", str(tmp_path / "p"),
                "--steps", "1"], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-pretrain: error:", str(tmp_path / "no_data"), "Fix:")


def test_pretrain_cli_refuses_a_split_of_mixed_image_sizes_and_writes_nothing(tmp_path: Path) -> None:
    from tests.test_survey import write_object

    for index, size in enumerate((8, 8, 12)):
        write_object(tmp_path / "data" / "train" / f"{index:03d}", height=size, width=size)
    proc = run([str(BIN / "nerfdiff-pretrain"), "--preset", "test", "--data", str(tmp_path / "data"), "--output-dir",
                str(tmp_path / "run"), "--steps", "1"], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-pretrain: error:", "('002') have images of another size than the 2 with 8x8", "Fix:")
    assert not (tmp_path / "run").exists()


def test_generate_data_cli_refuses_reserved_objects(tmp_path: Path) -> None:
    proc = run([str(BIN / "nerfdiff-generate-data"), "--object-ids", "960", "--output-dir", str(tmp_path / "g")], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-generate-data: error:", "960", "reserved")


@pytest.mark.parametrize("command, args, needle", [
    ("nerfdiff-eval", ["--data", "no_split", "--lr-final-factor", "0", "--output-dir", "out"],
     "--lr-final-factor must be in (0, 1], got 0.0"),
    ("nerfdiff-eval", ["--data", "no_split", "--video-frames", "0", "--output-dir", "out"], "--video-frames must be >= 1"),
    ("nerfdiff-eval", ["--data", "no_split", "--ngd.guidance-gamma", "-3", "--output-dir", "out"],
     "--ngd.guidance-gamma -3.0: must be >= 0"),
    ("nerfdiff-eval", ["--data", "no_split", "--ngd.eta", "2", "--output-dir", "out"], "--ngd.eta 2.0: must lie in [0, 1]"),
    ("nerfdiff-pretrain", ["--preset", "huge", "--output-dir", "out"], "unknown pretrain preset 'huge'"),
    ("nerfdiff-pretrain", ["--cdm.render-start-prob", "2", "--output-dir", "out"],
     "--cdm.render-start-prob 2.0 must be a probability"),
    ("nerfdiff-generate-data", ["--resolution", "2", "--output-dir", "out"], "--resolution must be >= 4, got 2"),
    ("nerfdiff-prepare", ["PHOTO", "--fill", "5", "--output-dir", "out"], "--fill must be in [0.05, 1]"),
    ("nerfdiff-prepare", ["PHOTO", "--elevation-degrees", "200", "--output-dir", "out"],
     "--elevation-degrees must lie in (-90, 90)"),
    ("nerfdiff-sample", ["--image", "PHOTO", "--num-views", "0", "--output-dir", "out"], "--num-views 0: needs at least 1"),
    ("nerfdiff-sample", ["--image", "missing.png", "--output-dir", "out"], "Fix: pass an existing PNG/JPG with --image"),
    ("nerfdiff-export", ["gaussians", "--load-config", "run/config.yml", "--max-gaussians", "0", "--output-path", "out/s.ply"],
     "--max-gaussians 0: must be >= 1"),
    ("nerfdiff-export", ["gaussians", "--load-config", "run/config.yml", "--steps", "-5", "--output-path", "out/s.ply"],
     "--steps -5: must be >= 0"),
    ("nerfdiff-export", ["mesh", "--load-config", "run/config.yml", "--resolution", "0", "--output-path", "out/m.glb"],
     "--resolution 0: marching cubes needs at least 8"),
    pytest.param("nerfdiff-export", ["mesh", "--load-config", "run/config.yml", "--device", "cuda", "--output-path", "out/m.glb"],
                 "--device cuda: this machine has no CUDA device", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_bad_flags_read_as_one_paragraph(command: str, args: list[str], needle: str, inputs: dict[str, Path],
                                         tmp_path: Path) -> None:
    """A flag out of range or unknown is refused before anything is loaded or written, naming the flag."""
    args = [str(inputs["photo"]) if a == "PHOTO" else a for a in args]
    proc = run([str(BIN / command), *args], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert_clean_error(proc.stderr, f"{command}: error:", needle)
    assert not (tmp_path / "out").exists()


def test_export_cli_missing_run(tmp_path: Path) -> None:
    if importlib.util.find_spec("nerfdiff_ns.export.cli") is None:
        pytest.skip("nerfdiff-export (nerfdiff_ns.export.cli) is not part of this checkout yet")
    missing = tmp_path / "no_run" / "config.yml"
    proc = run([str(BIN / "nerfdiff-export"), "mesh", "--load-config", str(missing), "--output-path", str(tmp_path / "m.glb")], tmp_path)
    assert proc.returncode == EXIT_USER_ERROR
    assert_clean_error(proc.stderr, "nerfdiff-export: error:", str(missing), "not found")


@pytest.mark.parametrize("bad", ["mask", "bundle", "gamma", "nerf-only"])
def test_ns_train_prints_one_paragraph(bad: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    """ns-train with our method: a corrupt mask (DataError), a missing bundle (BundleError) or a negative
    guidance strength (FlagError, which would otherwise unpin every step and silently run 450 iterations)."""
    args = [str(BIN / "ns-train"), "nerfdiff-tiny", "--vis", "tensorboard", "--output-dir", str(tmp_path / "o")]
    if bad == "bundle":
        args += ["--pipeline.model.bundle", str(inputs["missing_bundle"])]
    if bad == "gamma":
        args += ["--pipeline.ngd.guidance-gamma", "-3"]
    if bad == "nerf-only":  # the shipped bundle without its CDM, as `nerfdiff-pretrain --cdm.no-enabled` writes one
        nerf_only = tmp_path / "nerf_only"
        nerf_only.mkdir()
        config = json.loads((SHIPPED / "config.json").read_text())
        (nerf_only / "config.json").write_text(json.dumps({**config, "has_cdm": False}))
        shutil.copy(SHIPPED / "nerf.safetensors", nerf_only / "nerf.safetensors")
        args += ["--pipeline.model.bundle", str(nerf_only)]
    args += ["nerfdiff-image", "--data", str(inputs["photo"])]
    if bad == "mask":
        args += ["--mask", str(inputs["corrupt_mask"])]
    proc = run(args, tmp_path, timeout=600)
    assert proc.returncode != 0
    needle = {"mask": str(inputs["corrupt_mask"]), "bundle": str(inputs["missing_bundle"]),
              "gamma": "--pipeline.ngd.guidance-gamma -3.0: must be >= 0",
              "nerf-only": "is a NeRF-only bundle (no diffusion model), which --pipeline.ngd.mode ngd needs"}[bad]
    assert_clean_error(proc.stderr, "ns-train: error:", needle)
    assert not list((tmp_path / "o").rglob("*.ckpt"))
    assert not list((tmp_path / "o").rglob("*")), "a refused run leaves no folder behind (ns-train wrote config.yml first)"
