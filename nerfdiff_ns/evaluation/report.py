"""What an evaluation writes and shows: strict JSON, comparison grids, orbit videos, the summary tables.

``summarize`` rebuilds summary.json from the per-object records (so shards merge), and
``summary_markdown`` renders it as the README-style table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from nerfdiff_ns.data.errors import DataError
from nerfdiff_ns.errors import FlagError
from nerfdiff_ns.evaluation.config import ALL_METHODS, FORMAT_VERSION, RESULT_FORMAT, SUMMARY_FORMAT
from nerfdiff_ns.evaluation.paired import lead_differences, lead_markdown, paired_differences, paired_markdown
from nerfdiff_ns.metrics import HIGHER_IS_BETTER, METRICS

PAIRED_BASELINE = "feed-forward"
"""Every method is also compared with this one, object by object (summary.json "paired")."""
LEAD_METHOD = "ngd"
"""... and the method itself against every other one (summary.json "ngd_versus")."""


def _upscale_factor(height: int, width: int, min_size: int) -> int:
    return max(1, math.ceil(min_size / max(1, min(height, width))))


def _to_uint8(frames: torch.Tensor, factor: int) -> np.ndarray:
    x = frames.clamp(0, 1)
    if factor > 1:
        x = x.repeat_interleave(factor, dim=-3).repeat_interleave(factor, dim=-2)
    return (x * 255.0).round().to(torch.uint8).numpy()


def write_video(path: Path, frames: torch.Tensor, fps: int, min_size: int) -> Path:
    """Write ``[F, H, W, 3]`` frames in [0, 1] as an H.264 mp4 with imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    arr = _to_uint8(frames, _upscale_factor(height, width, min_size))
    if arr.shape[1] % 2 or arr.shape[2] % 2:  # yuv420p needs even sides: pad with the last row/column
        arr = np.pad(arr, ((0, 0), (0, arr.shape[1] % 2), (0, arr.shape[2] % 2), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = imageio_ffmpeg.write_frames(str(tmp), (arr.shape[2], arr.shape[1]), fps=fps, macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for frame in arr:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    os.replace(tmp, path)
    return path


def json_safe(value: Any) -> Any:
    """NaN/inf -> null, tuples -> lists, paths -> str (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a crash never leaves a half-written JSON (which resume would then skip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def grid_rows(num_views: int, rows: int) -> List[int]:
    if rows <= 0 or num_views == 0:
        return []
    rows = min(rows, num_views)
    return [int(i * num_views / rows) for i in range(rows)]


def comparison_grid(input_image: torch.Tensor, gt: torch.Tensor, renders: Dict[str, torch.Tensor], rows: List[int],
                    min_cell: int = 64, gap: int = 2) -> torch.Tensor:
    """``[H', W', 3]`` grid: one row per target view; columns input, ground truth, each method."""
    import torch.nn.functional as F

    height, width = gt.shape[1:3]
    inp = input_image
    if tuple(inp.shape[:2]) != (height, width):
        inp = F.interpolate(inp.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
    factor = _upscale_factor(height, width, min_cell)
    cells = []
    for r in rows:
        row = [inp, gt[r]] + [renders[m][r] for m in renders]
        cells.append(row)
    ch, cw = height * factor, width * factor
    ncols = len(cells[0])
    canvas = torch.full((len(rows) * (ch + gap) - gap, ncols * (cw + gap) - gap, 3), 0.5)
    for i, row in enumerate(cells):
        for j, image in enumerate(row):
            big = image.clamp(0, 1).repeat_interleave(factor, 0).repeat_interleave(factor, 1)
            canvas[i * (ch + gap) : i * (ch + gap) + ch, j * (cw + gap) : j * (cw + gap) + cw] = big
    header = column_header(["input", "ground truth", *renders], cw, gap)
    return torch.cat([header, torch.full((gap, canvas.shape[1], 3), 0.5), canvas], 0)


GRID_HEADER_HEIGHT = 14
"""Pixels of the grid's label row (black text on white above each column)."""


def column_header(labels: Sequence[str], cell_width: int, gap: int) -> torch.Tensor:
    """``[GRID_HEADER_HEIGHT, W, 3]``: each label centred over its column, shrunk to fit the cell."""
    import cv2

    width = len(labels) * (cell_width + gap) - gap
    band = np.ones((GRID_HEADER_HEIGHT, width, 3), np.float32)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for j, label in enumerate(labels):
        scale = 0.35
        (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
        if tw > cell_width - 8:  # a margin keeps neighbouring labels apart
            scale *= (cell_width - 8) / tw
            (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
        x = j * (cell_width + gap) + max(0, (cell_width - tw) // 2)
        cv2.putText(band, label, (x, (GRID_HEADER_HEIGHT + th) // 2), font, scale, (0.0, 0.0, 0.0), 1, cv2.LINE_AA)
    return torch.from_numpy(band)


def load_records(dirs: Sequence[Path]) -> Dict[str, Dict[str, Any]]:
    """Every ``objects/*.json`` of the given output folders, by object id. An object in several folders is one
    record with the union of its methods (a later folder wins per method), and only when it was evaluated with
    the same settings: results from another bundle or other flags are refused, not silently replaced."""
    records: Dict[str, Dict[str, Any]] = {}
    where: Dict[str, Path] = {}
    for d in dirs:
        folder = Path(d) / "objects"
        if not folder.is_dir():
            raise FlagError(f"{d} is not a nerfdiff-eval output folder (it has no objects/ folder): pass the "
                            "--output-dir of nerfdiff-eval runs")
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError) as err:
                raise DataError(path, f"not valid JSON ({err})", "delete it to re-evaluate that object") from err
            if data.get("format") != RESULT_FORMAT:
                continue
            key = str(data["object_id"])
            if key in records:
                if records[key].get("settings") != data.get("settings"):
                    raise FlagError(f"object {key} was evaluated with different settings in {where[key]} and {path} "
                                    "(bundle or flags; compare their \"settings\"): merge runs of one setting, or "
                                    "compare two runs with benchmarks/pair_runs.py")
                data = {**records[key], **data, "methods": {**records[key]["methods"], **data.get("methods", {})}}
            records[key], where[key] = data, path
    return records


def _stats(values: List[Optional[float]]) -> Dict[str, Any]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    arr = np.asarray(finite, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(finite)}


def _natural(name: str) -> tuple:
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def summarize(records: Dict[str, Dict[str, Any]], sources: Sequence[Path] = ()) -> Dict[str, Any]:
    """Mean and (population) std over objects of each method's per-object means, and every method's paired
    difference to feed-forward and NGD's to every other method over the same objects (``paired``,
    ``ngd_versus``; see ``evaluation.paired``)."""
    ids = sorted(records, key=_natural)
    present = {m for r in records.values() for m in r.get("methods", {})}
    order = [m for m in ALL_METHODS if m in present] + sorted(present - set(ALL_METHODS))
    methods: Dict[str, Any] = {}
    for m in order:
        rows = [records[i]["methods"][m] for i in ids if m in records[i].get("methods", {})]
        methods[m] = {
            "num_objects": len(rows),
            "metrics": {name: _stats([r["metrics"].get(name) for r in rows]) for name in METRICS},
            "cost": {key: _stats([r.get(key) for r in rows]) for key in ("seconds", "seconds_fit", "peak_memory_mb")},
            "opacity": {key: _stats([r.get("opacity", {}).get(key) for r in rows]) for key in ("object", "background")},
            "memory_kind": sorted({str(r.get("memory_kind")) for r in rows}),
        }
    notes: Dict[str, str] = {}
    settings: List[Dict[str, Any]] = []
    for i in ids:
        notes.update(records[i].get("metric_notes", {}))
        s = records[i].get("settings")
        if s not in settings:
            settings.append(s)
    return {
        "format": SUMMARY_FORMAT, "format_version": FORMAT_VERSION,
        "num_objects": len(ids), "objects": ids, "methods": methods, "metric_notes": notes,
        "settings": settings[0] if len(settings) == 1 else settings,
        "settings_consistent": len(settings) <= 1,
        "std": "population standard deviation over objects (ddof=0)",
        "sources": [str(Path(s)) for s in sources],
        "paired": paired_differences(records, ids, order, PAIRED_BASELINE, HIGHER_IS_BETTER)
        if PAIRED_BASELINE in order else None,
        "ngd_versus": lead_differences(records, ids, order, LEAD_METHOD, HIGHER_IS_BETTER)
        if LEAD_METHOD in order and len(order) > 1 else None,
    }


def _fmt(stat: Dict[str, Any], digits: int) -> str:
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def summary_markdown(summary: Dict[str, Any]) -> str:
    digits = {"psnr": 2, "seconds": 1, "seconds_fit": 1, "peak_memory_mb": 0}
    arrows = {k: ("↑" if v else "↓" if v is False else "→1") for k, v in HIGHER_IS_BETTER.items()}
    shown = [m for m in METRICS if any(s["metrics"][m]["n"] for s in summary["methods"].values())]
    lines = [
        "# nerfdiff-eval summary", "",
        f"Objects: {summary['num_objects']}. Mean ± std over objects of each object's mean over its target views.", "",
        "| method | objects | " + " | ".join(f"{m} {arrows[m]}" for m in shown) + " | seconds | peak MB |",
        "|---|---:|" + "---:|" * (len(shown) + 2),
    ]
    for name, s in summary["methods"].items():
        cells = [_fmt(s["metrics"][m], digits.get(m, 3)) for m in shown]
        cells += [_fmt(s["cost"]["seconds"], 1), _fmt(s["cost"]["peak_memory_mb"], 0)]
        lines.append(f"| {name} | {s['num_objects']} | " + " | ".join(cells) + " |")
    fog = {name: s["opacity"] for name, s in summary["methods"].items() if s.get("opacity", {}).get("object", {}).get("n")}
    if fog:
        lines += ["", "NeRF opacity at the targets (mean ± std over objects): on the ground truth's object pixels (ideal 1) / "
                  "on its background pixels (ideal 0, fog)", ""]
        lines += [f"- {name}: {_fmt(o['object'], 3)} / {_fmt(o['background'], 3)}" for name, o in fog.items()]
    if summary.get("paired"):
        lines += [""] + paired_markdown(summary["paired"], digits)
    if summary.get("ngd_versus"):
        lines += [""] + lead_markdown(summary["ngd_versus"], digits)
    if summary.get("metric_notes"):
        lines += ["", "Notes (metrics shown as n/a or left out):"]
        for key, note in summary.get("metric_notes", {}).items():
            lines.append(f"- `{key}`: {note}")
    if not summary.get("settings_consistent", True):
        lines += ["", "**Warning:** the objects were evaluated with different settings (see summary.json)."]
    lines += ["", "sharpness = Laplacian energy of the prediction / of the ground truth (blur < 1, ground truth = 1).", ""]
    return "\n".join(lines)


def write_summary(output_dir: Path, sources: Sequence[Path],
                  records: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """summary.json and summary.md of ``sources`` (their ``records`` when the caller already loaded them)."""
    summary = summarize(load_records(sources) if records is None else records, sources)
    write_json(Path(output_dir) / "summary.json", summary)
    (Path(output_dir) / "summary.md").write_text(summary_markdown(summary))
    return summary
