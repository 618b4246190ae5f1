"""Counter-based jitter streams: per-object uniform noise computed on the device, from integer hashes.

Why: pretraining gives every sample of a batch its own random stream, so a batch renders the same
whatever the process layout (1 vs 2 DDP ranks) and resumes exactly. Drawing that jitter from one
CPU ``torch.Generator`` per object meant a Python loop and tens of millions of CPU random numbers per
step (0.8 s of a tiny-preset step at batch 1024 on a 2-core CPU), copied to the GPU: the step was
bound by the host. Here each object carries a 64-bit key; uniform number ``i`` of draw ``d`` of that
object is a hash of (key, d, i), computed for the whole batch in a few elementwise integer ops on
the batch's device. Integer arithmetic is exact, so the values are the same on the CPU and on CUDA.

The hash is Chris Wellons' ``lowbias32`` (xorshift-multiply, a bijection on 32-bit words, made for
hashing consecutive integers); the 32-bit products are formed from 16-bit halves so no int64
product overflows. On a CPU it is slower than ``torch.rand`` (benchmarks/batch_host_cost.py).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive draw numbers over the key space


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in ``[0, 2**32)`` and ``c < 2**32``, without overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit words."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_from_keys(keys: torch.Tensor, draw: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uniform numbers in (0, 1) of shape ``[B, *shape[1:]]`` for keys ``[B, 2]`` (int64, 32-bit words).

    Row b depends only on ``keys[b]``, ``draw`` and the position inside the row, so rendering objects
    one by one with their own keys gives exactly the rows of a batched render.
    """
    if keys.dim() != 2 or keys.shape[-1] != 2 or keys.shape[0] != shape[0]:
        raise ValueError(f"jitter keys of shape {tuple(keys.shape)} for a batch of shape {tuple(shape)}: "
                         "one (2,) key per object is needed")
    per_row = 1
    for size in shape[1:]:
        per_row *= size
    if per_row >= 2**32:
        raise ValueError(f"{per_row} jitter numbers per object: at most 2**32 - 1 per draw")
    index = torch.arange(per_row, device=keys.device, dtype=torch.int64)
    k0, k1 = keys[:, :1] & _MASK32, keys[:, 1:] & _MASK32
    stream = (k1 + (draw * _GOLDEN)) & _MASK32
    bits = hash32(((index[None] ^ k0) + stream) & _MASK32)
    # the top 24 bits, centred in their bin: exactly representable in float32, never 0 or 1
    u = ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)
    return u.view(shape).to(dtype)


class JitterStreams:
    """One counter-based stream per object: ``draw(shape)`` returns the next uniform block, ``[B, ...]``.

    Like a ``torch.Generator``, each call advances the stream; ``row(b)`` is object b's stream at
    the same position (what a one-object render would use).
    """

    def __init__(self, keys: torch.Tensor, draws: int = 0) -> None:
        self.keys = keys
        self.draws = draws

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = uniform_from_keys(self.keys, self.draws, shape, dtype)
        self.draws += 1
        return out

    def row(self, index: int) -> "JitterStreams":
        return JitterStreams(self.keys[index : index + 1], self.draws)


def draw_jitter_key(generator: torch.Generator) -> torch.Tensor:
    """A sample's stream key ``(2,)`` (two 32-bit words), drawn from its own generator."""
    return torch.randint(0, 2**32, (2,), generator=generator, dtype=torch.int64)


__all__ = ["JitterStreams", "draw_jitter_key", "hash32", "uniform_from_keys"]
