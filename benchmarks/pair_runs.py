"""Paired difference of one method between two ``nerfdiff-eval`` runs on the same objects (run A − run B).

``nerfdiff-eval`` pairs methods within a run (NGD − feed-forward, one bundle). Comparing two bundles on
the same targets (e.g. a 64² bundle against the 32² one, both scored on 64² views) needs the pairing
across runs: the same Student-t interval and share of objects ahead, over the objects both runs scored.

    python benchmarks/pair_runs.py runs/c64-eval12 runs/c32-on64-eval12 --method ngd
    python benchmarks/pair_runs.py runs/ngd-run runs/ablation-run --method ngd --method-b sds   # two methods, two runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nerfdiff_ns.evaluation.paired import paired_stats

METRICS = {"psnr": True, "ssim": True, "sharpness": True, "gmsd": False}  # metric -> higher is better


def object_records(run: Path) -> dict[str, dict]:
    """Per-object JSONs of a run (merged or sharded: ``objects/`` or ``shard*/objects/``), by object id."""
    files = sorted(run.glob("objects/*.json")) + sorted(run.glob("shard*/objects/*.json"))
    if not files:
        raise SystemExit(f"{run}: no per-object results (objects/*.json or shard*/objects/*.json); is it a nerfdiff-eval output?")
    records = {}
    for path in files:
        record = json.loads(path.read_text())
        records[record["object_id"]] = record
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="nerfdiff-eval output directory A (the difference is A − B)")
    parser.add_argument("run_b", type=Path, help="nerfdiff-eval output directory B")
    parser.add_argument("--method", default="ngd", help="method to compare (default: ngd)")
    parser.add_argument("--method-b", default=None, help="method of run B, when it differs (e.g. an ablation run separately)")
    args = parser.parse_args()
    a, b = object_records(args.run_a), object_records(args.run_b)
    ids = sorted(set(a) & set(b))
    if not ids:
        raise SystemExit(f"{args.run_a} and {args.run_b} share no object ids")
    method_b = args.method_b or args.method
    label = args.method if method_b == args.method else f"{args.method} − {method_b}"
    print(f"{label}: {args.run_a} − {args.run_b}, {len(ids)} objects ({ids[0]}–{ids[-1]})")
    print("| metric | mean difference | 95 % interval | A ahead |")
    print("|---|---:|---:|---:|")
    for metric, higher in METRICS.items():
        diffs = [a[i]["methods"][args.method]["metrics"][metric] - b[i]["methods"][method_b]["metrics"][metric] for i in ids]
        stats = paired_stats(diffs, higher_is_better=higher)
        interval = "n/a (one object)" if stats["ci95"] is None else "[{:+.3f}, {:+.3f}]".format(*stats["ci95"])
        print(f"| {metric} | {stats['mean']:+.3f} | {interval} | {stats['ahead']:.0%} |")


if __name__ == "__main__":
    main()
