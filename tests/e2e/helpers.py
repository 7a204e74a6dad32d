"""Shared by the end-to-end tests: a free loopback port, and waiting for readiness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[str] | None = None) -> bool:
    """Poll ``/readyz`` until it answers 200 (False after ``timeout_s``, or if ``proc``
    exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def start_demo(port: int, state_dir: Path, seconds: float = 120) -> subprocess.Popen[bytes]:
    """``ripple up --demo`` on loopback with its own Ray and its own state directory."""
    cmd = [sys.executable, "-m", "serve.cli", "up", "--port", str(port), "--demo"]
    cmd += ["--demo-seconds", str(seconds), "--log-level", "WARNING"]
    cmd += ["--storage", str(state_dir)]
    return subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
