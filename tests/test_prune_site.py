"""scripts/gpu_worker/prune_site.py: a pack's site/ gives way where it clashes with the worker's own packages."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "gpu_worker"))
import prune_site  # noqa: E402


def make_package(site: Path, name: str, files: dict[str, str]) -> Path:
    top = site / name
    top.mkdir(parents=True)
    for file, text in files.items():
        (top / file).write_text(text)
    return top


def test_foreign_builds_are_the_packages_compiled_only_for_another_python(tmp_path):
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    make_package(tmp_path, "other_python", {"__init__.py": "", "_x.cpython-399-x86_64-linux-gnu.so": ""})
    make_package(tmp_path, "abi3", {"__init__.py": "", "_y.abi3.so": ""})
    make_package(tmp_path, "this_python", {"__init__.py": "", f"_z{suffix}": ""})
    make_package(tmp_path, "pure", {"__init__.py": ""})
    (tmp_path / "other_python-1.0.dist-info").mkdir()
    assert [p.name for p in prune_site.foreign_builds(tmp_path, suffix)] == ["other_python"]


def test_a_foreign_build_gives_way_only_where_the_worker_has_its_own(tmp_path, capsys):
    # "json" stands for regex on the H200: the worker has it, and the packed copy cannot load there.
    make_package(tmp_path, "json", {"__init__.py": "raise ImportError('wrong build')", "_j.cpython-399-x86_64-linux-gnu.so": ""})
    make_package(tmp_path, "nerfdiff_not_on_worker", {"__init__.py": "", "_n.cpython-399-x86_64-linux-gnu.so": ""})
    assert prune_site.main(tmp_path) == 0
    assert not (tmp_path / "json").exists()
    assert (tmp_path / "nerfdiff_not_on_worker").is_dir()
    assert "json: the packed build is for another Python; using the worker's own" in capsys.readouterr().out


def test_packed_versions_that_break_the_imports_give_way_to_the_workers(tmp_path, capsys):
    make_package(tmp_path, "tyro", {"__init__.py": "raise ImportError('needs a newer huggingface_hub')"})
    make_package(tmp_path, "tyro-0.0.1.dist-info", {"METADATA": "Name: tyro\nVersion: 0.0.1\n",
                                                    "RECORD": "tyro/__init__.py,,\ntyro-0.0.1.dist-info/METADATA,,\n"})
    assert not prune_site.imports_load(tmp_path)[0]
    assert prune_site.main(tmp_path) == 0
    assert not (tmp_path / "tyro").exists()
    assert not (tmp_path / "tyro-0.0.1.dist-info").exists()  # else version checks would still read 0.0.1
    out = capsys.readouterr().out
    assert "pretraining's imports fail (ImportError: needs a newer huggingface_hub)" in out
    assert "tyro: the worker has this package" in out


def test_imports_that_fail_either_way_are_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prune_site, "CHECK", "import nerfdiff_no_such_module")
    assert prune_site.main(tmp_path) == 1
    assert "still fail: ModuleNotFoundError" in capsys.readouterr().err
