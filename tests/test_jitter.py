"""Counter-based jitter streams (nerf.jitter): exact integer hash, uniform output, per-object rows."""

from __future__ import annotations

import pytest
import torch

from nerfdiff_ns.nerf.jitter import JitterStreams, _mul32, draw_jitter_key, hash32, uniform_from_keys
from nerfdiff_ns.nerf.renderer import _rand, stratified_samples


def _lowbias32(x: int) -> int:
    """The reference in plain Python integers (Wellons' lowbias32)."""
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_the_overflow_free_product_and_hash_equal_python_integers():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x80000000]),
                   torch.randint(0, 2**32, (500,), generator=gen, dtype=torch.int64)])
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF):
        assert _mul32(x, c).tolist() == [(v * c) & 0xFFFFFFFF for v in x.tolist()]
    assert hash32(x).tolist() == [_lowbias32(v) for v in x.tolist()]
    assert int(hash32(x).min()) >= 0 and int(hash32(x).max()) < 2**32


def test_uniform_numbers_are_in_the_open_interval_and_uniform():
    keys = torch.tensor([[12345, 678910]])
    u = uniform_from_keys(keys, 0, (1, 200_000), torch.float32)
    assert u.dtype == torch.float32 and float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005  # std of the mean: 0.29 / sqrt(2e5) = 0.0006
    assert abs(float(u.var()) - 1 / 12) < 0.002
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    expected = u.numel() / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 60  # 19 degrees of freedom: P(chi2 > 60) < 1e-5 for a uniform source
    lag = torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1]
    assert abs(float(lag)) < 0.01  # consecutive numbers uncorrelated


def test_rows_depend_only_on_their_key_and_draws_advance():
    keys = torch.stack([draw_jitter_key(torch.Generator().manual_seed(s)) for s in range(3)])
    streams = JitterStreams(keys)
    first, second = streams.draw((3, 64, 8)), streams.draw((3, 16))
    # object by object, each with its own stream from the start: the same rows
    for b in range(3):
        alone = JitterStreams(keys[b : b + 1])
        torch.testing.assert_close(alone.draw((1, 64, 8)), first[b : b + 1], rtol=0, atol=0)
        torch.testing.assert_close(alone.draw((1, 16)), second[b : b + 1], rtol=0, atol=0)
        torch.testing.assert_close(streams.row(b).draw((1, 4)), JitterStreams(keys[b : b + 1], 2).draw((1, 4)))
    assert not torch.equal(first[0], first[1])  # different keys, different numbers
    assert abs(float(torch.corrcoef(first.view(3, -1))[0, 1])) < 0.1
    assert not torch.equal(uniform_from_keys(keys, 0, (3, 16), torch.float32), second)  # draw 0 != draw 1
    torch.testing.assert_close(uniform_from_keys(keys, 1, (3, 16), torch.float32), second, rtol=0, atol=0)
    assert uniform_from_keys(keys, 0, (3, 4), torch.float64).dtype == torch.float64


def test_the_renderer_takes_streams_and_refuses_a_count_mismatch():
    keys = torch.tensor([[1, 2], [3, 4]])
    near, far = torch.full((2, 5, 1), 1.0), torch.full((2, 5, 1), 3.0)
    samples = stratified_samples(near, far, 8, True, JitterStreams(keys))
    assert samples.t.shape == (2, 5, 8)
    assert bool((samples.t > samples.edges[..., :-1]).all()) and bool((samples.t < samples.edges[..., 1:]).all())
    again = stratified_samples(near, far, 8, True, JitterStreams(keys))
    torch.testing.assert_close(samples.t, again.t, rtol=0, atol=0)
    with pytest.raises(ValueError, match="1 jitter streams for a batch of 2 objects"):
        _rand((2, 5), near, JitterStreams(keys[:1]))
    with pytest.raises(ValueError, match="one \\(2,\\) key per object"):
        uniform_from_keys(torch.tensor([1, 2]), 0, (1, 4), torch.float32)
    with pytest.raises(ValueError, match="at most 2\\*\\*32 - 1 per draw"):
        uniform_from_keys(keys[:1], 0, (1, 2**16, 2**16), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: compares the device's jitter with the CPU's")
def test_cuda_draws_the_same_numbers_as_the_cpu():
    keys = torch.tensor([[7, 11], [2**32 - 1, 0]])
    cpu = uniform_from_keys(keys, 3, (2, 1000), torch.float32)
    cuda = uniform_from_keys(keys.cuda(), 3, (2, 1000), torch.float32)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0)
