"""Shared test set-up: one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine oversubscribed
threads make them many times slower.
"""

import torch

torch.set_num_threads(1)


import pytest  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated SRN dataset: 3 train and 3 val objects of 6 views at 16 px."""
    pytest.importorskip("pybullet")
    from nerfdiff_ns.data.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("data")
    generate(GenerateConfig(output_dir=root, num_objects=3, views_per_object=6, eval_views_per_object=6,
                            resolution=16, progress=False))
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny dataset and a bundle (NeRF + CDM) trained on it for two steps with the `test` preset."""
    from nerfdiff_ns.pretrain import Trainer, parse_config

    run = tmp_path_factory.mktemp("run")
    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(run), "--steps", "2",
                        "--no-log-tensorboard"])
    Trainer(cfg).run()
    return tiny_data, run / "bundle"
