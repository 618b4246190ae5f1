"""Shared helpers of the benchmark scripts: machine facts, tables, JSON output, worker subprocesses.

Not a benchmark itself. The scripts import it as ``_common`` (Python puts the script's folder on
``sys.path``), and run measurements that need their own peak-memory figure in a fresh interpreter
through :func:`run_worker`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
_MARKER = "@@BENCH_RESULT@@"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`: find nerfdiff_ns
    sys.path.append(str(REPO_ROOT))


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(device: str) -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, torch, device, threads, load."""
    import torch

    facts: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        facts["cuda_version"] = torch.version.cuda
    return facts


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False")
    return device


def sync(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed_repeats(fn: Callable[[], Any], warmup: int, repeats: int, device: str) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; seconds of each timed call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def max_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB).

    Careful: for RUSAGE_SELF in a process started by fork+exec, Linux folds in the high-water mark
    of the forked copy of the parent, so a child of a big process inherits the parent's size;
    prefer :func:`peak_rss_mib` (VmHWM of this process's own address space) in workers.
    """
    return resource.getrusage(who).ru_maxrss / 1024.0


def _proc_status_mib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mib() -> float:
    """Resident set size now (VmRSS), in MiB."""
    value = _proc_status_mib("VmRSS")
    return value if value is not None else max_rss_mib()


def peak_rss_mib() -> float:
    """RSS high-water mark of this process (VmHWM; reset by :func:`reset_peak_rss`), in MiB."""
    value = _proc_status_mib("VmHWM")
    return value if value is not None else max_rss_mib()


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux: write 5 to /proc/self/clear_refs).

    ru_maxrss can only grow, so a transient peak while importing (torch alone is ~600 MiB here)
    would hide the peak of what is measured; resetting VmHWM after set-up avoids that.
    Returns False where it is not supported (then peaks include the set-up).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def print_facts(facts: dict[str, Any]) -> None:
    print("Machine")
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"  {key:<{width}}  {value}")
    load = facts.get("load_average_1min_at_start")
    cores = facts.get("cpu_cores") or 1
    if isinstance(load, (int, float)) and load > 0.5 * cores:
        print(f"  WARNING: load average {load} on {cores} cores: other processes are running, figures are not reportable.")
    print()


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(title)
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  " + "  ".join("-" * w for w in widths))
    for row, raw in zip(cells, rows):
        print("  " + "  ".join(c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w) for c, w, v in zip(row, widths, raw)))
    print()


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def run_worker(module: str, function: str, kwargs: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run ``module.function(**kwargs)`` in a fresh interpreter and return its dict result.

    A fresh process per measurement gives each one its own RSS high-water mark (ru_maxrss can only
    grow within a process) and its own CUDA peak-memory counter.
    """
    code = (
        "import json, sys; sys.path.insert(0, {bench!r}); import {module} as m; "
        "r = m.{function}(**json.loads({kwargs!r})); print({marker!r} + json.dumps(r), flush=True)"
    ).format(bench=str(BENCH_DIR), module=module, function=function, kwargs=json.dumps(kwargs), marker=_MARKER)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER):])
    raise RuntimeError(
        f"worker {module}.{function}({kwargs}) failed with exit code {proc.returncode}:\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )


def val_objects(split_dir: Path, num_objects: int) -> tuple[int, list[Path]]:
    """(input view index from the split's protocol.json, default 0; its first ``num_objects`` object folders)."""
    from nerfdiff_ns.data.srn import list_srn_objects

    protocol = split_dir / "protocol.json"
    input_view = int(json.loads(protocol.read_text()).get("input_view_index", 0)) if protocol.is_file() else 0
    return input_view, list_srn_objects(split_dir.parent, split_dir.name)[:num_objects]
