"""CDM training timesteps (nerfdiff_ns.training.timesteps): the configured distribution, drawn per sample."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from nerfdiff_ns.pretrain import DistInfo, make_batch, parse_config
from nerfdiff_ns.training.timesteps import TimestepSampler

T = 1000


def test_probabilities_are_the_documented_mixture():
    p = TimestepSampler(T, "band", band_max=249, band_prob=0.7).probabilities()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p[0]) == pytest.approx(0.7 / 250 + 0.3 / T)
    assert float(p[249]) == pytest.approx(0.7 / 250 + 0.3 / T)
    assert float(p[250]) == pytest.approx(0.3 / T)
    assert float(p[:250].sum()) == pytest.approx(0.7 + 0.3 * 0.25)
    assert torch.allclose(TimestepSampler(T).probabilities(), torch.full((T,), 1.0 / T, dtype=torch.float64))
    # the two limits of band: prob 0 is uniform, prob 1 is uniform on the band
    assert torch.allclose(TimestepSampler(T, "band", 99, 0.0).probabilities(), TimestepSampler(T).probabilities())
    assert float(TimestepSampler(T, "band", 99, 1.0).probabilities()[100:].sum()) == 0.0


@pytest.mark.parametrize("kind, band_max, band_prob", [("band", 250, 0.7), ("band", 50, 0.3), ("uniform", 0, 0.0)])
def test_draws_follow_the_distribution(kind, band_max, band_prob):
    sampler = TimestepSampler(T, kind, band_max, band_prob)
    n = 200_000
    drawn = sampler.sample(n, torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.long and int(drawn.min()) >= 0 and int(drawn.max()) < T
    # Chi-square over 40 bins of 25 timesteps (bin edges on the band's end where it has one).
    edges = sorted({T, *range(0, T, 25), band_max + 1})
    counts = torch.histogram(drawn.double(), bins=torch.tensor(edges, dtype=torch.float64) - 0.5).hist
    p = sampler.probabilities()
    expected = torch.stack([p[a:b].sum() for a, b in zip(edges[:-1], edges[1:])]) * n
    assert float(counts.sum()) == n
    assert stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    # and the share of the band within 4 standard errors
    share = float((drawn <= band_max).double().mean())
    want = float(p[: band_max + 1].sum())
    assert abs(share - want) < 4 * (want * (1 - want) / n) ** 0.5


def test_deterministic_from_the_generator_and_uniform_unchanged():
    sampler = TimestepSampler(T, "band", 250, 0.7)
    a = sampler.sample(64, torch.Generator().manual_seed(3))
    b = sampler.sample(64, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler.sample(64, torch.Generator().manual_seed(4)))
    # "uniform" is exactly the draw pretraining always made, so earlier runs reproduce
    assert torch.equal(TimestepSampler(T).sample(5, torch.Generator().manual_seed(1)),
                       torch.randint(T, (5,), generator=torch.Generator().manual_seed(1)))


def test_band_flags_reach_the_batches_independent_of_the_process_layout(tiny_data, tmp_path):
    """The global batch's timesteps are the same drawn by 1 process or split over 2 ranks (DDP equivalence)."""
    from nerfdiff_ns.data.multiview import MultiViewDataset

    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path), "--batch-size", "4",
                        "--cdm.timestep-sampling", "band", "--cdm.timestep-band-max", "20",
                        "--cdm.timestep-band-prob", "1.0"])
    assert cfg.cdm.timestep_sampler() == TimestepSampler(cfg.cdm.num_train_timesteps, "band", 20, 1.0)
    dataset = MultiViewDataset.from_split(tiny_data, "train")
    cpu = torch.device("cpu")
    for step in (0, 7):
        whole = make_batch(dataset, cfg, step, DistInfo(0, 1, 0), cpu)["timesteps"]
        halves = [make_batch(dataset, cfg, step, DistInfo(r, 2, r), cpu)["timesteps"] for r in (0, 1)]
        assert torch.equal(whole, torch.cat(halves))
        assert bool((whole <= 20).all())  # band_prob 1: every sample from the band


@pytest.mark.parametrize(
    "kwargs, named",
    [(dict(kind="cosine"), "--cdm.timestep-sampling"), (dict(kind="band", band_max=1000), "--cdm.timestep-band-max"),
     (dict(kind="band", band_prob=1.5), "--cdm.timestep-band-prob")],
)
def test_bad_settings_name_the_flag(kwargs, named):
    with pytest.raises(ValueError, match=named):
        TimestepSampler(T, **kwargs)


def test_trainer_refuses_a_bad_band_before_training(tiny_data, tmp_path):
    from nerfdiff_ns.pretrain import Trainer

    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path),
                        "--cdm.timestep-sampling", "band", "--cdm.timestep-band-max", "5000"])
    with pytest.raises(ValueError, match=r"--cdm.timestep-band-max 5000 must lie in \[0, 999\]"):
        Trainer(cfg)
