"""A pretraining step's render jitter (nerf.jitter): one draw per global batch, each rank its rows."""

from __future__ import annotations

import pytest
import torch

from nerfdiff_ns.nerf.jitter import StepJitter, batch_jitter, step_jitter_seed
from nerfdiff_ns.nerf.renderer import stratified_samples
from nerfdiff_ns.training.config import PretrainConfig
from nerfdiff_ns.training.distributed import DistInfo, sample_generator


def test_every_layout_and_a_lone_object_get_the_same_rows():
    seed = step_jitter_seed(0, 5)
    whole = StepJitter(seed, 4, 0, 4, "cpu")
    first, second = whole.draw((4, 64, 8)), whole.draw((4, 16))
    assert float(first.min()) >= 0.0 and float(first.max()) < 1.0
    for start, rows in ((0, 2), (2, 2), (1, 3)):  # the ranks of a 2-process run, and any other split
        part = StepJitter(seed, 4, start, rows, "cpu")
        torch.testing.assert_close(part.draw((rows, 64, 8)), first[start : start + rows], rtol=0, atol=0)
        torch.testing.assert_close(part.draw((rows, 16)), second[start : start + rows], rtol=0, atol=0)
    for b in range(4):  # one object rendered alone: its rows of the same two draws
        alone = whole.row(b)
        torch.testing.assert_close(alone.draw((1, 64, 8)), first[b : b + 1], rtol=0, atol=0)
        torch.testing.assert_close(alone.draw((1, 16)), second[b : b + 1], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(StepJitter(step_jitter_seed(0, 6), 4, 0, 4, "cpu").draw((4, 64, 8)), first)  # next step
    assert whole.draw((4, 3), torch.float64).dtype == torch.float64


def test_the_step_seed_is_apart_from_every_sample_stream():
    seeds = {step_jitter_seed(s, t) for s in range(3) for t in range(50)}
    assert len(seeds) == 150
    samples = {sample_generator(s, t, j).initial_seed() for s in range(3) for t in range(50) for j in range(8)}
    assert not seeds & samples


def test_make_batch_records_the_ranks_rows(tiny_data):
    from nerfdiff_ns.data.multiview import MultiViewDataset
    from nerfdiff_ns.training.batches import make_batch

    cfg = PretrainConfig(data=tiny_data, batch_size=4)
    dataset = MultiViewDataset.from_split(tiny_data, "train")
    one = make_batch(dataset, cfg, 3, DistInfo(0, 1, 0), torch.device("cpu"))
    rank1 = make_batch(dataset, cfg, 3, DistInfo(1, 2, 1), torch.device("cpu"))
    assert one["jitter"] == (step_jitter_seed(cfg.seed, 3), 4, 0)
    assert rank1["jitter"] == (step_jitter_seed(cfg.seed, 3), 4, 2)
    torch.testing.assert_close(batch_jitter(rank1, torch.device("cpu")).draw((2, 10)),
                               batch_jitter(one, torch.device("cpu")).draw((4, 10))[2:], rtol=0, atol=0)


def test_the_renderer_takes_step_jitter_and_refuses_a_row_mismatch():
    near, far = torch.full((2, 5, 1), 1.0), torch.full((2, 5, 1), 3.0)
    samples = stratified_samples(near, far, 8, True, StepJitter(7, 2, 0, 2, "cpu"))
    assert samples.t.shape == (2, 5, 8)
    assert bool((samples.t >= samples.edges[..., :-1]).all()) and bool((samples.t < samples.edges[..., 1:]).all())
    again = stratified_samples(near, far, 8, True, StepJitter(7, 2, 0, 2, "cpu"))
    torch.testing.assert_close(samples.t, again.t, rtol=0, atol=0)
    # the offsets within the bins are the step's draw (not the bin centres, not the global RNG): bins of width 0.25
    u = StepJitter(7, 2, 0, 2, "cpu").draw((2, 5, 8))
    torch.testing.assert_close(samples.t, samples.edges[..., :-1] + 0.25 * u, rtol=0, atol=1e-6)
    torch.testing.assert_close(stratified_samples(near[1:], far[1:], 8, True, StepJitter(7, 2, 1, 1, "cpu")).t,
                               samples.t[1:], rtol=0, atol=0)  # object 1 alone: its row of the same draw
    with pytest.raises(ValueError, match="1 jitter rows for a batch of 2 objects"):
        stratified_samples(near, far, 8, True, StepJitter(7, 2, 0, 1, "cpu"))
    with pytest.raises(ValueError, match="outside a global batch of 2"):
        StepJitter(7, 2, 1, 2, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: draws the step's jitter on the GPU")
def test_cuda_jitter_is_drawn_on_the_device_and_layout_independent():
    whole = StepJitter(3, 4, 0, 4, "cuda").draw((4, 1000))
    part = StepJitter(3, 4, 2, 2, "cuda").draw((2, 1000))
    assert whole.is_cuda
    torch.testing.assert_close(part, whole[2:], rtol=0, atol=0)
