"""Which diffusion timesteps the CDM is trained on.

Why not always uniform: NGD with gamma = 8 pins every trajectory to the NeRF's render above
t ~ 220 (w_t = min(1, gamma sigma^2 / alpha^2) = 1 there), so the CDM's predictions at high noise
are mostly overwritten, while the low-noise steps decide the detail NGD adds. A band sampler spends
a chosen share of the training on the low-noise band without dropping the rest (CDM-only sampling
from pure noise still needs every t).

Distributions over t in {0, ..., T-1}:

    uniform:  p(t) = 1 / T
    band:     p(t) = q * 1[t <= t_b] / (t_b + 1) + (1 - q) / T      (q = band_prob, t_b = band_max)

Draw for "band": u ~ U[0, 1); t ~ U{0..t_b} if u < q else t ~ U{0..T-1}. Every draw uses the
caller's generator only (pretraining passes each sample's own stream), so the timesteps are the
same for any number of processes and after a resume. "uniform" draws exactly
``torch.randint(T, (n,), generator)``, as pretraining always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from nerfdiff_ns.errors import FlagError

TimestepSampling = Literal["uniform", "band"]
TIMESTEP_SAMPLINGS = ("uniform", "band")


@dataclass(frozen=True)
class TimestepSampler:
    """Draws training timesteps from the distribution named by ``kind`` (see module docstring)."""

    num_train_timesteps: int = 1000
    kind: str = "uniform"
    band_max: int = 250
    band_prob: float = 0.7

    def __post_init__(self) -> None:
        if self.kind not in TIMESTEP_SAMPLINGS:
            raise FlagError(f"--cdm.timestep-sampling must be one of {TIMESTEP_SAMPLINGS}, got {self.kind!r}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be positive, got {self.num_train_timesteps}")
        if self.kind == "band":
            if not 0 <= self.band_max < self.num_train_timesteps:
                raise FlagError(
                    f"--cdm.timestep-band-max {self.band_max} must lie in [0, {self.num_train_timesteps - 1}] "
                    "(a timestep of the noise schedule)"
                )
            if not 0.0 <= self.band_prob <= 1.0:
                raise FlagError(f"--cdm.timestep-band-prob {self.band_prob} must be a probability in [0, 1]")

    def probabilities(self) -> torch.Tensor:
        """p(t) for t = 0 .. T-1, float64, summing to 1."""
        total = self.num_train_timesteps
        p = torch.full((total,), 1.0 / total, dtype=torch.float64)
        if self.kind == "band":
            p = (1.0 - self.band_prob) * p
            p[: self.band_max + 1] += self.band_prob / (self.band_max + 1)
        return p

    def sample(self, count: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``count`` timesteps (long, on the generator's device; CPU without one)."""
        total = self.num_train_timesteps
        device = generator.device if generator is not None else None
        if self.kind == "uniform":
            return torch.randint(total, (count,), generator=generator, device=device)
        in_band = torch.rand((count,), generator=generator, device=device) < self.band_prob
        band = torch.randint(self.band_max + 1, (count,), generator=generator, device=device)
        anywhere = torch.randint(total, (count,), generator=generator, device=device)
        return torch.where(in_band, band, anywhere)


__all__ = ["TIMESTEP_SAMPLINGS", "TimestepSampler", "TimestepSampling"]
