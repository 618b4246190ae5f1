"""Memory probe and clock of one method run: peak CUDA allocation or the process RSS high-water mark."""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch


def _proc_status_kb(key: str) -> Optional[int]:
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` on CUDA, else the process RSS high-water
    mark (``VmHWM``, reset through ``/proc/self/clear_refs``; falls back to the whole-process peak)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.result: Dict[str, Any] = {}

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            pass
        self.rss_before = _proc_status_kb("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _proc_status_kb("VmHWM")
        kind = "cpu_rss_hwm" if self.reset else "cpu_rss_hwm_whole_process"
        if hwm is None:
            try:
                import resource

                hwm = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
                kind = "cpu_ru_maxrss_whole_process"
            except Exception:
                kind = "unavailable"
        rss_mb = None if hwm is None else hwm / 1024.0
        self.result = {
            "peak_memory_mb": rss_mb, "memory_kind": kind, "peak_rss_mb": rss_mb,
            "rss_before_mb": None if self.rss_before is None else self.rss_before / 1024.0,
        }
        if self.cuda:
            torch.cuda.synchronize()
            self.result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            self.result["memory_kind"] = "cuda_max_memory_allocated"


def synced_clock(device: str) -> float:
    """perf_counter after the device finished its queued work (CUDA), so block timings are honest."""
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()
