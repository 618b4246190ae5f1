"""scripts/setup.sh on a nearly full disk: it stops before building the venv and says what to free.

On a full disk pip fails mid-download with 'incomplete-download', which names the network, not the disk
(CI once failed that way), so the script checks the free space first."""

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def test_setup_refuses_a_nearly_full_disk_before_building_the_venv(tmp_path: Path):
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    fake = tmp_path / "bin"
    fake.mkdir()
    # 2 GB free (df -P reports 1024-byte blocks); libusb and chromium present, so nothing is installed first
    _fake(fake, "df", 'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                      'echo "/dev/vda 264241152 262144000 2097152 99% /work"')
    _fake(fake, "ldconfig", 'echo "libusb-1.0.so.0 (libc6,x86-64) => /lib/libusb-1.0.so.0"')
    _fake(fake, "chromium", "exit 0")
    # PYTHON=false: were the check gone, making the venv would fail at once instead of installing for minutes
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": "false"}
    result = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "only 2 GB free on /work" in result.stderr and "Free disk space" in result.stderr
    assert not (repo / ".venv").exists()  # nothing half-built is left behind
