"""``losses.jsonl``: one JSON record per step (losses, or a skipped marker), kept consistent with resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


class LossLog:
    """Append-only per-step log of rank 0 (``path=None``: every call is a no-op, e.g. on other ranks)."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path

    def start(self, step: int) -> None:
        """A fresh run (step 0) empties the log; a resumed one drops the records after its checkpoint's step,
        which the resumed run recomputes."""
        if self.path is None:
            return
        kept = []
        if step > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                    kept.append(json.dumps(record))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
