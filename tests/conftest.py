"""Shared test set-up: one torch thread per test process.

Tiny models gain nothing from intra-op threads, and on a busy 2-core machine oversubscribed
threads make them many times slower.
"""

import torch

torch.set_num_threads(1)
