"""The live viewer in a real browser: a short ``ns-train nerfdiff-tiny`` with the viewer, opened in
headless Chromium (Debian's package, driven by playwright; nothing downloads a browser).

It checks what a person would see: the page says it is connected, the NGD controls exist, the NGD
progress text moves and the viewer's step readout advances while NGD runs, the viewport is
rendered at the method's resolution cap, and a change of gamma typed into the panel reaches the
pipeline. A screenshot is saved with the test's outputs (``$NERFDIFF_TEST_OUTPUT`` or the tmp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def start_logged(args: list[str], cwd: Path, log_path: Path, env: dict) -> subprocess.Popen:
    """Start a server in its own process group, stdout and stderr into ``log_path``."""
    with open(log_path, "w") as log:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group (SIGKILL after 30 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture()
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/setup.sh installs Debian's `chromium` when run as root with apt)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with playwright_api.sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def page_state(page) -> dict:
    """Text a person reads on the page: connection label, step readout, resolution, input values."""
    return page.evaluate(
        """() => {
            const text = document.body.innerText;
            const inputs = Array.from(document.querySelectorAll('input, textarea')).map(e => e.value);
            return {text, inputs};
        }"""
    )


def test_viewer_refreshes_while_ngd_runs(browser, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "ns-train.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    example = ROOT / "nerfdiff_ns" / "assets" / "examples"
    args = [
        str(BIN / "ns-train"), "nerfdiff-tiny", "--vis", "viewer", "--output-dir", str(tmp_path / "out"),
        "--experiment-name", "browser", "--viewer.websocket-port", str(port), "--viewer.websocket-host", "127.0.0.1",
        "--viewer.quit-on-train-completion", "True",
        # long enough to watch (the test stops it when it has seen what it needs), small enough to move fast
        "--pipeline.ngd.num-virtual-views", "4", "--pipeline.ngd.diffusion-steps", "25",
        "--pipeline.ngd.nerf-iters-per-step", "6",
        # every step of the schedule runs (25 progress updates), pinned or not, so there is time to watch them
        "--pipeline.ngd.skip-pinned-steps", "False",
        "nerfdiff-image", "--data", str(example / "904_input.png"), "--camera-file", str(example / "904_camera.json"),
    ]
    proc = start_logged(args, tmp_path, log_path, env)
    try:
        up = wait_for(lambda: "Viewer running locally" in log_path.read_text() or proc.poll() is not None, 240)
        assert up and proc.poll() is None, f"ns-train did not start its viewer:\n{log_path.read_text()[-3000:]}"

        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("Connected", exact=True).wait_for(timeout=60_000)
        for label in ("NGD guidance gamma", "CDM CFG scale", "NGD progress"):
            page.get_by_text(label, exact=True).first.wait_for(timeout=30_000)

        steps: list[int] = []
        progress: list[str] = []
        resolutions: list[str] = []

        def observe() -> bool:
            state = page_state(page)
            step = re.search(r"Step:\s*(\d+)", state["text"])
            if step and (not steps or int(step.group(1)) != steps[-1]):
                steps.append(int(step.group(1)))
            res = re.search(r"Resolution:\s*(\d+x\d+)", state["text"])
            if res:
                resolutions.append(res.group(1))
                if "128" in res.group(1).split("x"):  # a full-resolution refresh is on screen: keep it
                    page.screenshot(path=str(tmp_path / "viewer.png"))
            for value in state["inputs"]:
                if value.startswith("step ") and (not progress or value != progress[-1]):
                    progress.append(value)
            full_res = any("128" in r.split("x") for r in resolutions)
            return len(steps) >= 3 and len(progress) >= 2 and full_res

        seen = wait_for(observe, 150, interval=0.5)
        if not seen:
            page.screenshot(path=str(tmp_path / "viewer.png"))
        assert seen, (f"viewer did not advance while NGD ran: step readouts {steps}, progress texts {progress}\n"
                      f"{log_path.read_text()[-2000:]}")
        assert steps == sorted(steps) and steps[-1] > 0, steps
        assert any("128" in r.split("x") for r in resolutions), (
            f"viewport never rendered at the method's 128 px cap: {sorted(set(resolutions))}")

        # a gamma typed into the panel reaches the pipeline
        field = page.locator("xpath=//*[normalize-space(text())='NGD guidance gamma']/following::input[1]")
        field.fill("3.5")
        field.press("Enter")
        assert wait_for(lambda: "NGD guidance gamma set to 3.5" in log_path.read_text(), 30), (
            f"gamma typed into the viewer panel did not reach the pipeline:\n{log_path.read_text()[-2000:]}")
    finally:
        stop(proc)
        target = os.environ.get("NERFDIFF_TEST_OUTPUT")
        if target and (tmp_path / "viewer.png").is_file():
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "viewer.png", Path(target) / "viewer.png")
        print(f"[test] viewer screenshot: {tmp_path / 'viewer.png'}")


def test_splat_viewer_renders_camera_moves_in_the_browser(browser, tmp_path: Path) -> None:
    """``nerfdiff-view-splat`` in headless Chromium: it renders the browser's camera, and again after a drag."""
    import numpy as np
    import torch
    from PIL import Image

    from nerfdiff_ns.export.splat_ply import GaussianCloud, write_splat_ply

    gen = torch.Generator().manual_seed(0)
    n = 400
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 0.6 * torch.rand(n, 1, generator=gen)
    means[:, 0] *= 1.6  # an elongated red blob: it looks different from the side
    cloud = GaussianCloud(means, torch.full((n, 3), -2.6), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          torch.full((n,), 2.0), torch.tensor([[1.5, -1.5, -1.5]]).repeat(n, 1),
                          meta={"image_size": [32, 32], "fov_degrees": 45.0, "distance": 2.7})
    ply = write_splat_ply(tmp_path / "blob.ply", cloud, sh_degree=0)
    port = free_port()
    log_path = tmp_path / "view-splat.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = start_logged([str(BIN / "nerfdiff-view-splat"), str(ply), "--port", str(port), "--host", "127.0.0.1"],
                        tmp_path, log_path, env)
    try:
        up = wait_for(lambda: "serving" in log_path.read_text() or proc.poll() is not None, 120)
        assert up and proc.poll() is None, log_path.read_text()[-2000:]
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text("Connected", exact=True).wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"\d+ ms/frame")).wait_for(timeout=60_000)  # a frame was rendered for this camera
        time.sleep(1.0)

        def red_share(path: Path) -> tuple[float, np.ndarray]:
            pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)[:, :520]  # left of the panel
            red = (pixels[..., 0] > 150) & (pixels[..., 1] < 120) & (pixels[..., 2] < 120)
            return float(red.mean()), red

        page.screenshot(path=str(tmp_path / "splat_before.png"))
        before, mask_before = red_share(tmp_path / "splat_before.png")
        assert before > 0.01, f"no splat on screen (red share {before:.4f})"
        page.mouse.move(260, 300)
        page.mouse.down()
        page.mouse.move(420, 200, steps=12)
        page.mouse.up()
        time.sleep(3.0)
        page.screenshot(path=str(tmp_path / "splat_after.png"))
        after, mask_after = red_share(tmp_path / "splat_after.png")
        assert after > 0.01, f"splat gone after the camera move (red share {after:.4f})"
        assert (mask_before != mask_after).mean() > 0.002, "the view did not change after dragging the camera"
    finally:
        stop(proc)
