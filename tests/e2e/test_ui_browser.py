"""The status page in a real browser (slow; needs Debian's chromium):

    apt-get install -y chromium && python -m pytest -m slow tests/e2e/test_ui_browser.py

It starts `ripple up --demo` (its own Ray, on loopback), opens /ui in headless Chromium
and checks what the page rendered from the live API: the demo's agents in the agents
table, both shards up, readiness, no error line. The screenshot goes to a temporary
path; the README's `docs/ui.png` is rewritten only when asked:

    RIPPLE_UPDATE_SCREENSHOT=1 python -m pytest -m slow tests/e2e/test_ui_browser.py
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import free_port, start_demo, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SHOT = ROOT / "docs" / "ui.png"


def _tbody(dom: str, element_id: str) -> str:
    m = re.search(rf'<tbody id="{element_id}">(.*?)</tbody>', dom, re.S)
    assert m, f"no #{element_id} in the rendered page"
    return m.group(1)


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--window-size=1400,1000", "--virtual-time-budget=6000"]
    return subprocess.run(
        [browser, *flags, *args], check=True, timeout=90, capture_output=True, text=True
    )


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
        dom = _chromium(browser, "--dump-dom", f"{url}/ui").stdout
        agents = _tbody(dom, "agents")
        assert "demo-agent-0" in agents and "demo-agent-1" in agents, agents[:500]
        shards = _tbody(dom, "shards")
        assert shards.count(">up<") == 2, shards[:500]  # both shards, each "up"
        assert re.search(r'<p id="error">\s*</p>', dom), "the page shows an error line"
        out = tmp_path / "ui.png"
        _chromium(browser, f"--screenshot={out}", f"{url}/ui")
        assert out.stat().st_size > 20_000  # a rendered page, not a blank one
        if os.environ.get("RIPPLE_UPDATE_SCREENSHOT") == "1":
            shutil.copy(out, SHOT)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
