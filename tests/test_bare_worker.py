"""Pretraining on a bare GPU worker: torch, numpy and Pillow installed, nothing else.

``scripts/gpu_worker/bare_python.py`` gives a Python started with ``-S`` whose only site folder
links torch (+ its requirements), numpy and Pillow from this venv, so nerfstudio, pybullet, viser,
tensorboard, transformers, and tyro or diffusers unless packed, are not installed there: an
accidental import fails the run, and ``find_spec``/metadata do not see them either. The pack
(``scripts/gpu_worker/pack.py``) must supply everything else; ``run.sh`` runs on CPU here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "scripts" / "gpu_worker"
NOT_ON_WORKER = ("nerfstudio", "pybullet", "viser", "tensorboard", "transformers", "trimesh", "cv2", "gsplat", "tinycudann")

# Runs the CLI, then checks (in the same process) that nothing outside the worker's set was loaded.
GUARDED_PRETRAIN = """
import runpy, sys
sys.argv = ["nerfdiff-pretrain", *sys.argv[1:]]
try:
    runpy.run_module("nerfdiff_ns.pretrain", run_name="__main__")
finally:
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
    print("LOADED_FORBIDDEN", loaded)
""" % (NOT_ON_WORKER,)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    return env


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(WORKER))
    try:
        from bare_python import make_bare_python
    finally:
        sys.path.remove(str(WORKER))
    return make_bare_python(tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def pack(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "worker-pack"
    proc = subprocess.run([sys.executable, str(WORKER / "pack.py"), str(out), "--data", str(tiny_data)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "total" in proc.stdout
    return out


def test_bare_python_really_lacks_the_desktop_packages(bare_python: Path) -> None:
    code = ("import importlib.util, importlib.metadata as md, torch, numpy, PIL\n"
            f"names = {NOT_ON_WORKER + ('tyro', 'rich', 'diffusers', 'safetensors')!r}\n"
            "print([n for n in names if importlib.util.find_spec(n) is not None])\n"
            "try:\n    md.version('nerfstudio'); print('metadata visible')\nexcept md.PackageNotFoundError:\n    pass\n"
            "import nerfstudio\n")
    proc = subprocess.run([str(bare_python), "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.stdout.splitlines()[0] == "[]", proc.stdout
    assert "metadata visible" not in proc.stdout
    assert "ModuleNotFoundError: No module named 'nerfstudio'" in proc.stderr


def test_pack_contents_and_manifest(pack: Path) -> None:
    manifest = json.loads((pack / "MANIFEST.json").read_text())
    assert {"diffusers", "safetensors", "tyro", "rich", "huggingface-hub"} <= set(manifest["packages"])
    assert not {"torch", "numpy", "pillow", "nerfstudio", "transformers"} & set(manifest["packages"])
    assert "safetensors" in manifest["portable_compiled"]  # abi3: any CPython 3
    assert manifest["objects"] == {"train": 3, "val": 3}
    assert sum(manifest["sizes_bytes"].values()) < 64 * 1024 * 1024
    with tarfile.open(pack / "code.tar.gz") as tar:
        names = tar.getnames()
    assert "code/nerfdiff_ns/pretrain.py" in names and "code/configs/pretrain/test.json" in names
    assert not any(n.startswith("code/nerfdiff_ns/assets") or "__pycache__" in n for n in names)


def test_pack_refuses_over_the_limit_and_foreign_folders(tiny_data: Path, tmp_path: Path) -> None:
    over = subprocess.run([sys.executable, str(WORKER / "pack.py"), str(tmp_path / "p"), "--data", str(tiny_data),
                           "--limit-mib", "1"], capture_output=True, text=True, env=_env(), timeout=300)
    assert over.returncode != 0 and "over --limit-mib 1" in over.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, str(WORKER / "pack.py"), str(foreign), "--data", str(tiny_data)],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode != 0 and "not a pack made by this script" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_pretrain_cli_on_a_bare_worker_with_another_python(bare_python: Path, pack: Path, tiny_data: Path,
                                                           tmp_path: Path) -> None:
    """This repository's code + the packed packages, with every Python-version specific extension removed
    (as on a worker whose Python differs from this one): trains 2 steps and exports a loadable bundle."""
    with tarfile.open(pack / "site.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    removed = [p for p in (tmp_path / "site").rglob("*.so") if ".cpython-" in p.name]
    for path in removed:
        path.unlink()
    assert removed  # charset_normalizer, pyyaml, regex: the run must not need them compiled
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(bare_python), "-c", GUARDED_PRETRAIN, "--preset", "test", "--data", str(tiny_data), "--output-dir", str(run),
         "--steps", "2", "--device", "cpu", "--no-log-tensorboard"],
        capture_output=True, text=True, timeout=600, env=_env(PYTHONPATH=f"{REPO}:{tmp_path / 'site'}"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED_FORBIDDEN []" in proc.stdout
    _check_bundle(run / "bundle", steps=2)


def test_run_sh_end_to_end_on_cpu(bare_python: Path, pack: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(pack / "run.sh"), "--preset", "test", "--steps", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
        env=_env(OUT=str(out), WORK=str(tmp_path / "work"), PYTHON=str(bare_python), TIME_LIMIT="500"),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"nerfdiff_ns from {tmp_path / 'work' / 'code' / 'nerfdiff_ns'}" in proc.stdout  # the packed copy
    assert "[worker] bundle in" in proc.stdout
    steps = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and all(s["total_loss"] > 0 for s in steps)
    assert json.loads((out / "pretrain_config.json").read_text())["steps"] == 2
    assert "[nerfdiff] bundle:" in (out / "train.log").read_text()
    _check_bundle(out / "bundle", steps=2)


def test_throughput_sh_profiles_a_step_on_a_bare_worker(bare_python: Path, pack: Path, tiny_data: Path,
                                                        tmp_path: Path) -> None:
    """The device call that measures images/s also says where a step's time goes (PROFILE_STEPS), with only the
    worker's packages: phases synchronised one by one, then the costliest ops from torch.profiler."""
    bench_data = tmp_path / "bench-data"
    bench_data.mkdir()
    (bench_data / "16px-8x4").symlink_to(tiny_data)  # the worker cannot generate data: it is made beforehand
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        ["bash", str(WORKER / "throughput.sh")], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=_env(OUT=str(out), PACK=str(pack), BENCH_DATA=str(bench_data), PYTHON=str(bare_python), DEV="cpu",
                 SPECS="test 2 0 32", STEPS="1", PROFILE_STEPS="1"),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "where a step's time goes" in proc.stdout and "costliest ops by self CPU time" in proc.stdout
    result = json.loads((out / "tp-test-2-w0-r32.json").read_text())["presets"][0]
    assert result["target_rays"] == 32  # the spec's fourth field: --target-rays
    phases = {row["phase"] for row in result["phases"]}
    assert {"batch", "forward/render_target", "forward/render_target_rays", "forward/cdm_loss", "backward"} <= phases
    assert result["top_ops"] and result["images_per_s"] > 0


def test_run_sh_refuses_a_missing_out_and_a_used_up_time_limit(bare_python: Path, pack: Path, tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(pack / "run.sh")], capture_output=True, text=True, timeout=60,
                          env=_env(WORK=str(tmp_path / "work")))
    assert proc.returncode != 0 and "set OUT" in proc.stderr
    assert not (tmp_path / "work").exists()
    proc = subprocess.run(["bash", str(pack / "run.sh"), "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env=_env(OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), PYTHON=str(bare_python),
                                   TIME_LIMIT="0"))
    assert proc.returncode != 0 and "TIME_LIMIT=0s was used up by unpacking" in proc.stderr
    assert not (tmp_path / "out" / "bundle").exists()


def _check_bundle(path: Path, steps: int) -> None:
    import torch

    from nerfdiff_ns.bundle import load_bundle

    bundle = load_bundle(path)
    assert bundle.config.has_cdm and bundle.config.extra["trained_steps"] == steps
    nerf = bundle.load_nerf()
    size = bundle.config.nerf.image_size
    triplane = nerf.encode(torch.rand(1, size, size, 3))
    assert triplane.shape[-1] == bundle.config.nerf.triplane_resolution and torch.isfinite(triplane).all()
    bundle.load_cdm()
