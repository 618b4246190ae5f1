"""Pretraining runs without rich (bare GPU workers): a plain progress line replaces the bar."""

from __future__ import annotations

import sys

from nerfdiff_ns.pretrain import Trainer, parse_config
from nerfdiff_ns.training.progress import _PlainProgress, make_progress


def test_without_rich_the_loop_prints_plain_progress(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # `from rich.progress import ...` -> ImportError
    assert isinstance(make_progress("pretrain"), _PlainProgress)
    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(tmp_path), "--steps", "2",
                        "--no-log-tensorboard"])
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.step == 2 and (tmp_path / "bundle" / "config.json").is_file()
    err = capsys.readouterr().err
    assert "[nerfdiff] pretrain 1/2" in err and "[nerfdiff] pretrain 2/2" in err


def test_plain_progress_counts_and_can_be_disabled(capsys):
    bar = _PlainProgress("render cache", disable=False)
    with bar:
        task = bar.add_task("render", total=40)
        for _ in range(40):
            bar.update(task, advance=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[nerfdiff] render cache 1/40") and lines[-1].startswith("[nerfdiff] render cache 40/40")
    assert len(lines) <= 22  # every 5 %, not every call
    quiet = _PlainProgress("x", disable=True)
    with quiet:
        quiet.update(quiet.add_task("x", total=3), completed=3)
    assert capsys.readouterr().err == ""
