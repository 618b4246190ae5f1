"""Paired comparison of each method with a baseline over the same objects (the claim's statistics).

Per object, d = metric(method) - metric(baseline), both the object's mean over its targets. Over
the n objects that have both: mean d, its 95 % confidence interval mean ± t_{0.975, n-1} s / sqrt(n)
(s the sample standard deviation, ddof = 1; Student's t, the objects taken as independent draws),
and the share of objects on which the method is ahead (d > 0 for higher-is-better metrics,
d < 0 for lower-is-better ones). Pairing removes the spread between objects, which dominates
the unpaired mean ± std of the main table.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

PAIRED_METRICS = ("psnr", "ssim", "sharpness")


def paired_stats(diffs: Sequence[float], higher_is_better: Optional[bool] = True) -> Dict[str, Any]:
    """mean, 95 % CI ([lo, hi]; None for n < 2), n, and the share of objects ahead of the baseline."""
    d = np.asarray([float(v) for v in diffs if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0, "ahead": None}
    mean = float(d.mean())
    ci = None
    if n >= 2:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
        ci = [mean - half, mean + half]
    if higher_is_better is None:
        ahead = None
    else:
        ahead = float(np.mean(d > 0) if higher_is_better else np.mean(d < 0))
    return {"mean": mean, "ci95": ci, "n": n, "ahead": ahead}


def _differences(records: Dict[str, Dict[str, Any]], ids: Sequence[str], a: str, b: str, metric: str) -> List[float]:
    """Per-object metric(a) - metric(b) over the objects that have both."""
    diffs: List[float] = []
    for i in ids:
        runs = records[i].get("methods", {})
        if a in runs and b in runs:
            x, y = runs[a]["metrics"].get(metric), runs[b]["metrics"].get(metric)
            if x is not None and y is not None:
                diffs.append(float(x) - float(y))
    return diffs


def _pair_stats(records: Dict[str, Dict[str, Any]], ids: Sequence[str], a: str, b: str,
                higher_is_better: Dict[str, Optional[bool]], metrics: Sequence[str]) -> Dict[str, Any]:
    """``{metric: paired_stats}`` of method a minus method b over the objects that have both."""
    return {metric: paired_stats(_differences(records, ids, a, b, metric), higher_is_better.get(metric, True)) for metric in metrics}


def paired_differences(records: Dict[str, Dict[str, Any]], ids: Sequence[str], methods: Sequence[str],
                       baseline: str, higher_is_better: Dict[str, Optional[bool]],
                       metrics: Sequence[str] = PAIRED_METRICS) -> Dict[str, Any]:
    """Each method minus the baseline: ``{"baseline": b, "methods": {m: {metric: paired_stats}}}``."""
    versus = {m: _pair_stats(records, ids, m, baseline, higher_is_better, metrics) for m in methods if m != baseline}
    return {"baseline": baseline, "methods": versus}


def lead_differences(records: Dict[str, Dict[str, Any]], ids: Sequence[str], methods: Sequence[str], lead: str,
                     higher_is_better: Dict[str, Optional[bool]],
                     metrics: Sequence[str] = PAIRED_METRICS) -> Dict[str, Any]:
    """The lead method (NGD) minus each other method: ``{"lead": l, "versus": {m: {metric: paired_stats}}}``;
    'ahead' is then the share of objects on which the lead method is better."""
    versus = {m: _pair_stats(records, ids, lead, m, higher_is_better, metrics) for m in methods if m != lead}
    return {"lead": lead, "versus": versus}


def _cell(stat: Dict[str, Any], digits: int) -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["ci95"] is None:
        return f"{stat['mean']:+.{digits}f}"
    return f"{stat['mean']:+.{digits}f} [{stat['ci95'][0]:+.{digits}f}, {stat['ci95'][1]:+.{digits}f}]"


def _table(title: str, label: str, rows: Dict[str, Dict[str, Any]], digits: Dict[str, int]) -> List[str]:
    if not rows:
        return []
    metrics = list(next(iter(rows.values())).keys())
    lead = metrics[0]
    lines = [title, "", f"| {label} | objects | " + " | ".join(f"Δ {m}" for m in metrics) + f" | ahead on {lead} |",
             "|---|---:|" + "---:|" * (len(metrics) + 1)]
    for name, per_metric in rows.items():
        cells = [_cell(per_metric[m], digits.get(m, 3)) for m in metrics]
        ahead = per_metric[lead]["ahead"]
        lines.append(f"| {name} | {per_metric[lead]['n']} | " + " | ".join(cells)
                     + f" | {'n/a' if ahead is None else f'{100 * ahead:.0f} %'} |")
    return lines


def paired_markdown(paired: Dict[str, Any], digits: Dict[str, int]) -> List[str]:
    """Table lines: method | per metric 'mean [lo, hi]' of method - baseline | share of objects ahead."""
    return _table(
        f"Paired difference to {paired['baseline']} over the same objects (method − {paired['baseline']}): "
        "mean [95 % CI] (Student t over objects); 'ahead' = share of objects where the method is better.",
        "method", paired.get("methods", {}), digits,
    )


def lead_markdown(lead: Dict[str, Any], digits: Dict[str, int]) -> List[str]:
    """Table lines: other method | per metric 'mean [lo, hi]' of lead - other | share of objects the lead is ahead."""
    return _table(
        f"{lead['lead']} against each method over the same objects ({lead['lead']} − method): mean [95 % CI]; "
        f"'ahead' = share of objects where {lead['lead']} is better.",
        "versus", lead.get("versus", {}), digits,
    )
