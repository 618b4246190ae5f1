"""Render cache of the CDM-only stage (--freeze-nerf): cached renders equal live renders, the stage runs
the UNet alone, the cache file is reused while valid, and resume / DDP stay exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nerfdiff_ns.nerf.image_nerf import SourceView
from nerfdiff_ns.pretrain import JointModel, Trainer, parse_config, scale_intrinsics
from nerfdiff_ns.training.render_cache import CACHE_FILE, cache_triples, triple_inputs

from .test_pretrain import read_jsonl, state_equal, subprocess_env


def stage_cfg(data: Path, out: Path, bundle: Path, *flags: str):
    return parse_config(["--preset", "test", "--data", str(data), "--output-dir", str(out), "--no-log-tensorboard",
                         "--init-from", str(bundle), "--freeze-nerf", *flags])


def test_cached_renders_equal_live_renders(tiny_bundle, tmp_path):
    data, bundle = tiny_bundle
    trainer = Trainer(stage_cfg(data, tmp_path, bundle))
    cache = trainer.render_cache
    assert cache is not None and len(cache) == len(trainer.dataset) * trainer.cfg.render_cache_pairs
    res = trainer.cfg.render_resolution
    assert cache.renders.shape == (len(cache), res, res, 3)
    pick = torch.tensor([0, 25, len(cache) - 1])
    inputs = triple_inputs(trainer.dataset, cache.object_index[pick], cache.source_view[pick], cache.target_view[pick],
                           trainer.device)
    with torch.no_grad():
        live, _ = trainer.model.render_views(inputs, jitter=False)
    torch.testing.assert_close(cache.renders[pick], live, rtol=1e-5, atol=1e-6)
    # ... and equal to the frozen NeRF's whole-image render, the way NGD renders its conditions
    nerf = trainer.nerf
    for row, i in enumerate(pick.tolist()):
        src = inputs["source_image"][row : row + 1]
        k = inputs["intrinsics"][row : row + 1]
        source = SourceView(inputs["source_c2w"][row : row + 1], k, tuple(src.shape[1:3]))
        with torch.no_grad():
            image = nerf.render_image(nerf.encode(src), source, inputs["target_c2w"][row : row + 1],
                                      scale_intrinsics(k, src.shape[1], res), res, res)["rgb"][0]
        torch.testing.assert_close(cache.renders[i], image, rtol=1e-5, atol=1e-5)


def test_triples_cover_each_view_as_target_once_per_round(tiny_data):
    from nerfdiff_ns.data.multiview import MultiViewDataset

    dataset = MultiViewDataset.from_split(tiny_data, "train")
    views = dataset.load_object(0).num_views
    objects, sources, targets = cache_triples(dataset, 2 * views + 1, seed=0)
    assert objects.tolist() == [o for o in range(len(dataset)) for _ in range(2 * views + 1)]
    assert bool((sources != targets).all()) and int(sources.max()) < views
    for o in range(len(dataset)):
        tgt = targets[objects == o]
        assert sorted(tgt[:views].tolist()) == list(range(views)) == sorted(tgt[views : 2 * views].tolist())
    again = cache_triples(dataset, 2 * views + 1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip((objects, sources, targets), again))
    other = cache_triples(dataset, 2 * views + 1, seed=1)
    assert not torch.equal(other[2], targets)
    with pytest.raises(ValueError, match="--render-cache-pairs"):
        cache_triples(dataset, 0, seed=0)


def test_cached_stage_runs_the_unet_alone_and_reuses_the_file(tiny_bundle, tmp_path, monkeypatch):
    data, bundle = tiny_bundle
    trainer = Trainer(stage_cfg(data, tmp_path, bundle, "--steps", "3", "--cdm.learning-rate", "2e-3"))
    assert (tmp_path / CACHE_FILE).is_file()
    nerf_before = {k: v.clone() for k, v in trainer.nerf.state_dict().items()}
    cdm_before = {k: v.clone() for k, v in trainer.cdm.state_dict().items()}

    def no_live_render(*args, **kwargs):
        raise AssertionError("the cached CDM stage must not render the NeRF")

    monkeypatch.setattr(JointModel, "render_targets", no_live_render)
    history = [trainer.train_step() for _ in range(3)]
    assert all(h is not None and h["nerf_mse"] > 0 for h in history)
    assert all(h["total_loss"] == pytest.approx(h["diffusion_loss"]) for h in history)
    assert state_equal(trainer.nerf.state_dict(), nerf_before)
    assert not state_equal(trainer.cdm.state_dict(), cdm_before)

    # a new run on the same NeRF, data and settings loads the file instead of rendering (render_targets raises)
    again = Trainer(stage_cfg(data, tmp_path, bundle, "--no-resume"))
    assert torch.equal(again.render_cache.renders, trainer.render_cache.renders)
    assert again.render_cache.key == trainer.render_cache.key
    # other settings -> another key: rendered again, and the file replaced
    monkeypatch.undo()
    other = Trainer(stage_cfg(data, tmp_path, bundle, "--no-resume", "--render-cache-pairs", "2"))
    assert len(other.render_cache) == 2 * len(other.dataset) and other.render_cache.key != trainer.render_cache.key
    # a corrupt file is rendered again, not trusted
    (tmp_path / CACHE_FILE).write_bytes(b"garbage")
    assert len(Trainer(stage_cfg(data, tmp_path, bundle, "--no-resume", "--render-cache-pairs", "2")).render_cache) == 6
    # --no-render-cache renders live (the former behaviour)
    assert Trainer(stage_cfg(data, tmp_path, bundle, "--no-resume", "--no-render-cache")).render_cache is None


@pytest.mark.parametrize("augment", [(), ("--augment", "hflip", "channels")], ids=["plain", "augmented"])
def test_cached_stage_resumes_exactly(tiny_bundle, tmp_path, augment):
    data, bundle = tiny_bundle
    flags = ("--steps-per-checkpoint", "2", *augment)
    Trainer(stage_cfg(data, tmp_path / "straight", bundle, "--steps", "4", *flags)).run()
    Trainer(stage_cfg(data, tmp_path / "split", bundle, "--steps", "2", *flags)).run()
    second = Trainer(stage_cfg(data, tmp_path / "split", bundle, "--steps", "4", *flags))
    assert second.step == 2
    second.run()
    expected, got = read_jsonl(tmp_path / "straight" / "losses.jsonl"), read_jsonl(tmp_path / "split" / "losses.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for g, e in zip(got, expected):
        for key in ("diffusion_loss", "nerf_mse", "grad_norm", "train_psnr"):
            assert g[key] == pytest.approx(e[key], rel=1e-6, abs=1e-9), (g["step"], key)


@pytest.mark.parametrize("augment", [(), ("--augment", "hflip", "channels")], ids=["plain", "augmented"])
def test_cached_stage_two_process_ddp_matches_one_process(tiny_bundle, tmp_path, augment):
    """Each rank renders half of the triples; the gathered cache and the losses equal one process's (with the
    symmetry augmentation too: each sample's choice comes from its own generator)."""
    data, bundle = tiny_bundle
    flags = ["--preset", "test", "--data", str(data), "--no-log-tensorboard", "--steps", "3", "--batch-size", "2",
             "--steps-per-checkpoint", "100", "--init-from", str(bundle), "--freeze-nerf", "--render-cache-pairs", "5",
             *augment]
    one = Trainer(parse_config([*flags, "--output-dir", str(tmp_path / "one")]))
    one.run()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nerfdiff_ns.pretrain", *flags, "--output-dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    gathered = load_file(str(tmp_path / "two" / CACHE_FILE))
    torch.testing.assert_close(gathered["renders"], one.render_cache.renders, rtol=1e-5, atol=1e-6)
    assert torch.equal(gathered["target_view"], one.render_cache.target_view)
    a, b = read_jsonl(tmp_path / "one" / "losses.jsonl"), read_jsonl(tmp_path / "two" / "losses.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("diffusion_loss", "nerf_mse", "train_psnr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-7), (ra["step"], key)
    assert json.loads((tmp_path / "two" / "pretrain_config.json").read_text())["render_cache"] is True
