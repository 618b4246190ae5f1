"""nerfdiff-eval: metrics, the per-object/summary outputs, resume, shards and merge (CPU, tiny settings)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfdiff_ns.bundle import load_bundle
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.evaluation.report import GRID_HEADER_HEIGHT
from nerfdiff_ns.metrics import MetricSuite, laplacian_energy, mse_to_psnr, ms_ssim_min_size, psnr, sharpness_ratio
from nerfdiff_ns.ngd import NGDConfig, ngd_step_timesteps

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
METHODS = ("feed-forward", "ngd", "cdm-only")
TINY_NGD = [
    "--ngd.num-virtual-views", "2", "--ngd.diffusion-steps", "2", "--ngd.nerf-iters-per-step", "2",
    "--ngd.final-iters", "2", "--rays-per-batch", "64",
]


# ---------------------------------------------------------------------------------------------
# metrics


def test_psnr_of_a_known_mse() -> None:
    gt = torch.full((2, 8, 8, 3), 0.5)
    pred = gt + 0.1  # mse = 0.01 -> 20 dB
    assert psnr(pred, gt).tolist() == pytest.approx([20.0, 20.0], abs=1e-5)  # 0.6 - 0.5 in float32
    assert float(mse_to_psnr(1e-3)) == pytest.approx(30.0)
    assert float(psnr(gt[0], gt[0])[0]) == pytest.approx(100.0)  # mse floored at 1e-10


def test_sharpness_ratio_is_one_for_identical_and_below_one_for_blurred_images() -> None:
    torch.manual_seed(0)
    gt = torch.rand(3, 32, 32, 3)
    assert sharpness_ratio(gt, gt).tolist() == [1.0, 1.0, 1.0]
    chw = gt.permute(0, 3, 1, 2)
    blurred = torch.nn.functional.avg_pool2d(chw, 3, stride=1, padding=1, count_include_pad=False).permute(0, 2, 3, 1)
    ratio = sharpness_ratio(blurred, gt)
    assert bool((ratio < 0.5).all()), ratio
    assert bool((laplacian_energy(torch.full((1, 8, 8, 3), 0.3)) == 0).all())
    assert math.isnan(float(sharpness_ratio(gt[:1, :8, :8], torch.full((1, 8, 8, 3), 0.3))[0]))  # flat ground truth


def test_metric_suite_reports_every_metric_and_nulls_with_a_reason() -> None:
    torch.manual_seed(0)
    gt = torch.rand(2, 32, 32, 3)
    pred = (gt + 0.05 * torch.randn_like(gt)).clamp(0, 1)
    suite = MetricSuite()
    values = suite.per_view(pred, gt)
    assert set(values) == {"psnr", "ssim", "lpips_vgg", "lpips_alex", "sharpness", "haarpsi", "gmsd", "ms_ssim"}
    for name in ("psnr", "ssim", "sharpness", "haarpsi", "gmsd"):
        assert len(values[name]) == 2 and all(math.isfinite(v) for v in values[name]), name
    assert values["ms_ssim"] is None and "161" in suite.notes["ms_ssim"] and ms_ssim_min_size() == 161
    for net in ("vgg", "alex"):
        assert (values[f"lpips_{net}"] is None) == (f"lpips_{net}" in suite.notes)
    same = suite.per_view(gt, gt)
    assert same["ssim"] == pytest.approx([1.0, 1.0], abs=1e-6) and same["haarpsi"] == pytest.approx([1.0, 1.0], abs=1e-4)


def test_paired_difference_to_feed_forward_with_its_95_interval() -> None:
    """summary["paired"]: per-object differences, mean, Student-t 95 % interval, share of objects ahead."""
    from scipy import stats

    from nerfdiff_ns.evaluate import summarize, summary_markdown

    ff = {"900": 16.0, "901": 18.0, "902": 15.0, "903": 20.0}
    gain = {"900": 0.6, "901": -0.1, "902": 0.4, "903": 0.3}
    records = {
        i: {"object_id": i, "settings": {}, "methods": {
            "feed-forward": {"metrics": {"psnr": ff[i], "ssim": 0.5, "sharpness": 0.1}},
            "ngd": {"metrics": {"psnr": ff[i] + gain[i], "ssim": 0.52 + 0.01 * k, "sharpness": 0.2}},
        }} for k, i in enumerate(ff)
    }
    paired = summarize(records)["paired"]
    assert paired["baseline"] == "feed-forward" and list(paired["methods"]) == ["ngd"]
    psnr = paired["methods"]["ngd"]["psnr"]
    d = [gain[i] for i in ff]
    mean = sum(d) / 4
    sd = (sum((x - mean) ** 2 for x in d) / 3) ** 0.5
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert psnr["n"] == 4 and psnr["mean"] == pytest.approx(mean)
    assert psnr["ci95"] == pytest.approx([mean - half, mean + half])
    assert psnr["ahead"] == pytest.approx(0.75)
    ssim = paired["methods"]["ngd"]["ssim"]
    assert ssim["mean"] == pytest.approx(0.035) and ssim["ahead"] == 1.0
    assert paired["methods"]["ngd"]["sharpness"]["ahead"] is None  # sharpness: closer to 1 is better, no "ahead"
    md = summary_markdown(summarize(records))
    assert "Paired difference to feed-forward" in md
    assert f"| ngd | 4 | {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]" in md and "| 75 % |" in md
    # NGD against every other method: the same numbers seen from NGD (ngd - feed-forward), NGD ahead on 75 %
    versus = summarize(records)["ngd_versus"]
    assert versus["lead"] == "ngd" and list(versus["versus"]) == ["feed-forward"]
    assert versus["versus"]["feed-forward"]["psnr"]["mean"] == pytest.approx(mean)
    assert versus["versus"]["feed-forward"]["psnr"]["ahead"] == pytest.approx(0.75)
    assert "ngd against each method" in md and f"| feed-forward | 4 | {mean:+.2f} [" in md
    # one object: a mean without an interval; no feed-forward run: no paired table
    one = summarize({"900": records["900"]})["paired"]["methods"]["ngd"]["psnr"]
    assert one["n"] == 1 and one["ci95"] is None
    only_ngd = {"900": {"object_id": "900", "settings": {}, "methods": {"ngd": records["900"]["methods"]["ngd"]}}}
    assert summarize(only_ngd)["paired"] is None and "Paired" not in summary_markdown(summarize(only_ngd))
    assert summarize(only_ngd)["ngd_versus"] is None


def test_opacity_record_uses_the_targets_alpha_when_they_have_one() -> None:
    """Fog = opacity on background pixels: from the targets' alpha (RGBA views) or, without it, the colour test."""
    from nerfdiff_ns.evaluation.method_run import EvalViews
    from nerfdiff_ns.evaluation.scoring import opacity_on

    images = torch.ones(1, 2, 2, 3)
    images[0, 0, 0] = torch.tensor([0.5, 0.2, 0.1])  # one coloured object pixel; (0, 1) is a white object pixel
    acc = torch.tensor([[[0.9], [0.7]], [[0.2], [0.0]]])[None]
    base = dict(names=["a"], cameras=None, images=images, input_image=images[0], input_index=0, input_name="0")
    by_colour = opacity_on(acc, EvalViews(**base, background=torch.ones(3)))
    assert by_colour["object"] == pytest.approx(0.9) and by_colour["background"] == pytest.approx(0.3)
    alpha = torch.tensor([[[1.0], [1.0]], [[0.0], [0.0]]])[None]
    by_alpha = opacity_on(acc, EvalViews(**base, background=torch.ones(3), masks=alpha))
    assert by_alpha["object"] == pytest.approx(0.8) and by_alpha["background"] == pytest.approx(0.1)


def test_shards_partition_the_selected_objects() -> None:
    from nerfdiff_ns.evaluate import parse_shard, select_objects

    objects = [Path(str(i)) for i in range(7)]
    parts = [select_objects(objects, 5, f"{i}/3") for i in range(3)]
    indices = sorted(i for part in parts for i, _ in part)
    assert indices == [0, 1, 2, 3, 4]
    assert [i for i, _ in parts[1]] == [1, 4]
    assert select_objects(objects, 0, "0/1") == list(enumerate(objects))
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("2")
    with pytest.raises(ValueError):
        parse_shard("3/3")


# ---------------------------------------------------------------------------------------------
# end to end on a tiny dataset and bundle


def _args(root: Path, bundle: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(root / "val"), "--bundle", str(bundle), "--output-dir", str(out), "--methods", *METHODS,
            "--num-objects", "2", "--max-eval-views", "3", "--no-progress", *TINY_NGD, *extra]


@pytest.fixture(scope="module")
def full_run(tiny_bundle: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    from nerfdiff_ns.evaluate import parse_args, run_evaluation

    root, bundle = tiny_bundle
    out = tmp_path_factory.mktemp("eval")
    args = _args(root, bundle, out, "--video-frames", "3")
    result = run_evaluation(parse_args(args))
    return args, out, result


def test_object_json_structure_and_finite_metrics(full_run) -> None:
    _, out, result = full_run
    assert result["evaluated"] == ["900", "901"] and result["skipped"] == []
    for object_id in ("900", "901"):
        rec = json.loads((out / "objects" / f"{object_id}.json").read_text())
        assert rec["object_id"] == object_id and rec["input_view"] == 0
        assert rec["num_eval_views"] == 3 and len(rec["eval_views"]) == 3 and "000000" not in rec["eval_views"]
        assert rec["image_size"] == [16, 16]
        assert list(rec["methods"]) == list(METHODS)
        assert rec["settings"]["ngd"]["diffusion_steps"] == 2 and rec["settings"]["rays_per_batch"] == 64
        for method, entry in rec["methods"].items():
            for name in ("psnr", "ssim", "sharpness", "haarpsi", "gmsd"):
                assert math.isfinite(entry["metrics"][name]), (method, name)
                assert len(entry["per_view"][name]) == 3
                assert entry["metrics"][name] == pytest.approx(sum(entry["per_view"][name]) / 3)
            assert entry["metrics"]["ms_ssim"] is None  # 16 px images
            assert entry["seconds"] > 0 and entry["seconds"] >= entry["seconds_fit"]
            assert entry["peak_memory_mb"] is None or entry["peak_memory_mb"] > 0
            assert entry["memory_kind"]
        assert rec["methods"]["feed-forward"]["iterations"] == 0
        # the run length follows the steps that run: 2 scheduled, less the pinned ones (nerfdiff-tiny's gamma 8)
        ngd = NGDConfig(**rec["settings"]["ngd"])
        kept = len(ngd_step_timesteps(ngd, load_bundle(rec["settings"]["bundle"]).load_train_scheduler()))
        assert rec["methods"]["ngd"]["iterations"] == kept * 2 + 2
        assert "ms_ssim" in rec["metric_notes"]


def test_feed_forward_psnr_matches_a_direct_render_of_the_bundle(full_run, tiny_bundle) -> None:
    from nerfdiff_ns.bundle import load_bundle
    from nerfdiff_ns.data.multiview import load_object_folder
    from nerfdiff_ns.datamanager import foreground_mask
    from nerfdiff_ns.nerf.image_nerf import SourceView

    root, bundle_path = tiny_bundle
    _, out, _ = full_run
    bundle = load_bundle(bundle_path)
    nerf = bundle.load_nerf("cpu").eval()
    for object_id in ("900", "901"):
        rec = json.loads((out / "objects" / f"{object_id}.json").read_text())
        obj = load_object_folder(root / "val" / object_id, bundle.config.nerf.background)
        stems = [p.stem for p in obj.image_paths]
        src = rec["input_view"]
        height, width = obj.images.shape[1:3]
        with torch.no_grad():
            triplane = nerf.encode(obj.images[src][None])
        source = SourceView(obj.c2w[src][None], obj.intrinsics[None], (height, width))
        values, acc, on_object = [], [], []
        for name in rec["eval_views"]:
            v = stems.index(name)
            out_v = nerf.render_image(triplane, source, obj.c2w[v][None], obj.intrinsics[None], height, width)
            mse = (out_v["rgb"][0].clamp(0, 1).double() - obj.images[v].double()).pow(2).mean()
            values.append(float(-10 * torch.log10(mse)))
            acc.append(out_v["accumulation"][0, ..., 0].clamp(0, 1))
            on_object.append(foreground_mask(obj.images[v], torch.tensor(bundle.config.nerf.background))[..., 0] > 0)
        entry = rec["methods"]["feed-forward"]
        assert entry["per_view"]["psnr"] == pytest.approx(values, abs=1e-4)
        assert entry["metrics"]["psnr"] == pytest.approx(sum(values) / len(values), abs=1e-4)
        # the opacity record: the same NeRF's accumulation on the ground truth's object and background pixels
        acc, on_object = torch.stack(acc), torch.stack(on_object)
        assert on_object.any() and (~on_object).any()
        assert entry["opacity"]["object"] == pytest.approx(float(acc[on_object].mean()), abs=1e-4)
        assert entry["opacity"]["background"] == pytest.approx(float(acc[~on_object].mean()), abs=1e-4)
        assert "opacity" not in rec["methods"]["cdm-only"]  # no NeRF of its own


def test_grid_videos_and_summary(full_run) -> None:
    import imageio_ffmpeg
    from PIL import Image

    _, out, result = full_run
    rec = json.loads((out / "objects" / "900.json").read_text())
    assert rec["grid"]["columns"] == ["input", "ground truth", *METHODS] and len(rec["grid"]["rows"]) == 3
    with Image.open(out / "objects" / "900.png") as im:
        width, height = im.size
        header = np.asarray(im.convert("L"))[:GRID_HEADER_HEIGHT]
    cell = 64  # 16 px views upscaled x4, 2 px gaps, a label row on top
    assert (width, height) == (5 * cell + 4 * 2, GRID_HEADER_HEIGHT + 2 + 3 * cell + 2 * 2)
    for j in range(5):  # every column has its label: dark text on the white band
        assert header[:, j * (cell + 2) : j * (cell + 2) + cell].min() < 128
    for method in ("feed-forward", "ngd"):
        video = out / "videos" / f"900_{method}.mp4"
        assert rec["methods"][method]["video"] == f"videos/900_{method}.mp4"
        reader = imageio_ffmpeg.read_frames(str(video))
        assert tuple(next(reader)["size"]) == (128, 128)
        assert sum(1 for _ in reader) == 3
    assert not (out / "videos" / "900_cdm-only.mp4").exists()
    assert not (out / "scratch").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary == result["summary"]
    assert summary["num_objects"] == 2 and summary["objects"] == ["900", "901"]
    for method in METHODS:
        stats = summary["methods"][method]
        assert stats["num_objects"] == 2
        per_object = [json.loads((out / "objects" / f"{i}.json").read_text())["methods"][method]["metrics"]["psnr"] for i in ("900", "901")]
        assert stats["metrics"]["psnr"]["mean"] == pytest.approx(sum(per_object) / 2)
        assert stats["metrics"]["psnr"]["std"] == pytest.approx(abs(per_object[0] - per_object[1]) / 2)
        assert stats["metrics"]["ms_ssim"] == {"mean": None, "std": None, "n": 0}
    md = (out / "summary.md").read_text()
    assert "Objects: 2" in md and "| ngd | 2 |" in md and "±" in md
    assert summary["methods"]["ngd"]["opacity"]["background"]["n"] == 2 and "- ngd: " in md  # the fog line
    assert summary["methods"]["cdm-only"]["opacity"]["object"]["n"] == 0 and "- cdm-only" not in md


def test_resume_skips_objects_that_are_done(full_run) -> None:
    from nerfdiff_ns.evaluate import parse_args, run_evaluation

    args, out, _ = full_run
    paths = [out / "objects" / f"{i}.json" for i in ("900", "901")]
    before = [p.stat().st_mtime_ns for p in paths]
    result = run_evaluation(parse_args(args))
    assert result["evaluated"] == [] and result["skipped"] == ["900", "901"]
    assert [p.stat().st_mtime_ns for p in paths] == before
    # the same folder with other settings is refused, not reported as done with the old results
    with pytest.raises(FlagError, match=r"900\.json was evaluated with other settings.*--overwrite"):
        run_evaluation(parse_args([*args, "--input-view-weight", "3"]))
    assert [p.stat().st_mtime_ns for p in paths] == before


def _record(folder: Path, object_id: str, settings: dict, methods: dict) -> None:
    from nerfdiff_ns.evaluation.config import RESULT_FORMAT

    (folder / "objects").mkdir(parents=True, exist_ok=True)
    (folder / "objects" / f"{object_id}.json").write_text(json.dumps(
        {"format": RESULT_FORMAT, "object_id": object_id, "settings": settings, "methods": methods}))


def test_merge_joins_methods_of_one_setting_and_refuses_two(tmp_path: Path) -> None:
    from nerfdiff_ns.evaluation.config import MergeConfig
    from nerfdiff_ns.evaluation.report import load_records
    from nerfdiff_ns.evaluation.runner import run_merge

    ngd, ablation = {"ngd": {"metrics": {"psnr": 16.0}}}, {"input-only": {"metrics": {"psnr": 12.0}}}
    _record(tmp_path / "a", "900", {"bundle": "b1"}, ngd)
    _record(tmp_path / "b", "900", {"bundle": "b1"}, ablation)
    assert set(load_records([tmp_path / "a", tmp_path / "b"])["900"]["methods"]) == {"ngd", "input-only"}
    _record(tmp_path / "c", "900", {"bundle": "b2"}, ablation)
    with pytest.raises(FlagError, match=r"object 900 was evaluated with different settings in .*a/objects/900\.json"):
        load_records([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(FlagError, match=r"no_such_run is not a nerfdiff-eval output folder"):
        run_merge(MergeConfig(inputs=(tmp_path / "no_such_run",)))
    (tmp_path / "empty" / "objects").mkdir(parents=True)
    with pytest.raises(FlagError, match=r"merge: no nerfdiff-eval object results"):
        run_merge(MergeConfig(inputs=(tmp_path / "empty",)))


def test_shards_merge_to_the_unsharded_summary(full_run, tiny_bundle, tmp_path: Path) -> None:
    from nerfdiff_ns.evaluate import parse_args, run_evaluation

    root, bundle = tiny_bundle
    _, out, full = full_run
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    done = []
    for i, shard in enumerate(shards):
        result = run_evaluation(parse_args(_args(root, bundle, shard, "--shard", f"{i}/2", "--no-videos")))
        done.append(result["evaluated"])
    assert done == [["900"], ["901"]]
    merged_dir = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "nerfdiff_ns.evaluate", "merge", *map(str, shards), "--output-dir", str(merged_dir)],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((merged_dir / "summary.json").read_text())
    reference = full["summary"]
    assert merged["num_objects"] == reference["num_objects"] == 2
    assert merged["objects"] == reference["objects"]
    assert merged["settings"] == reference["settings"] and merged["settings_consistent"]
    for method in METHODS:
        for name, stat in reference["methods"][method]["metrics"].items():
            got = merged["methods"][method]["metrics"][name]
            assert got["n"] == stat["n"], (method, name)
            if stat["mean"] is not None:
                assert got["mean"] == pytest.approx(stat["mean"], abs=1e-6), (method, name)
                assert got["std"] == pytest.approx(stat["std"], abs=1e-6), (method, name)
    assert (merged_dir / "summary.md").is_file()


def test_ngd_matches_ns_train_then_ns_eval(full_run, tiny_bundle, tmp_path: Path) -> None:
    """The benchmark's ngd run is the ns-train run: the same PSNR/SSIM as `ns-train nerfdiff-tiny ...` + `ns-eval`.

    Both nerfstudio commands run in this process (their own code paths: tyro over nerfstudio's method
    union, ``scripts.train.main``, then ``eval_setup`` + ``get_average_eval_image_metrics`` as ns-eval does),
    which saves two interpreter start-ups.
    """
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts import train as ns_train
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfdiff_ns.evaluate import nerfstudio_session

    root, bundle = tiny_bundle
    _, out, _ = full_run
    args = [
        "nerfdiff-tiny", "--output-dir", str(tmp_path / "out"), "--vis", "tensorboard",
        "--experiment-name", "cmp", "--pipeline.model.bundle", str(bundle),
        "--pipeline.ngd.num-virtual-views", "2", "--pipeline.ngd.diffusion-steps", "2",
        "--pipeline.ngd.nerf-iters-per-step", "2", "--pipeline.ngd.final-iters", "2",
        "--pipeline.datamanager.train-num-rays-per-batch", "64",
        "nerfdiff-srn-object", "--data", str(root / "val" / "900"), "--max-eval-views", "3",
    ]
    with nerfstudio_session(verbose=False):
        ns_train.main(tyro.cli(AnnotatedBaseConfigUnion, args=args))
    config = next((tmp_path / "out").glob("cmp/nerfdiff-tiny/*/config.yml"))
    with nerfstudio_session(verbose=False):
        _, pipeline, _, _ = eval_setup(config)
        ns = pipeline.get_average_eval_image_metrics(get_std=True)
    ours = json.loads((out / "objects" / "900.json").read_text())["methods"]["ngd"]["metrics"]
    assert ours["psnr"] == pytest.approx(float(ns["psnr"]), abs=1e-4)
    assert ours["ssim"] == pytest.approx(float(ns["ssim"]), abs=1e-5)
