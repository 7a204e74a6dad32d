"""The status page in a real browser (slow; needs Debian's chromium):

    apt-get install -y chromium && python -m pytest -m slow tests/e2e/test_ui_browser.py

It starts `ripple up --demo` (its own Ray, on loopback), opens /ui in headless Chromium,
and saves the screenshot the README shows (docs/ui.png)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import free_port, start_demo, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SHOT = ROOT / "docs" / "ui.png"


@pytest.mark.slow
def test_status_page_renders_the_fleet_in_chromium(tmp_path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium)")
    port = free_port()
    up = start_demo(port, tmp_path / "state")
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_ready(url, 120, up), "ripple up --demo did not become ready"
        time.sleep(12)  # a few demo ticks: signals, selections, a trend
        out = tmp_path / "ui.png"
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--virtual-time-budget=6000",
                f"--screenshot={out}",
                f"{url}/ui",
            ],
            check=True,
            timeout=90,
            capture_output=True,
        )
        assert out.stat().st_size > 20_000  # a rendered page, not a blank one
        SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(out, SHOT)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
