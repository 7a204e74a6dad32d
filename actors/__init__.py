"""Ripple's coordination core and the Ray actors that host it.

``import actors`` stays light (no Ray import) so the plain core can be used and tested
without a cluster; the Ray entry points below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["connect", "connect_async", "deploy", "teardown"]


def __getattr__(name: str) -> Any:
    if name in ("connect", "connect_async"):
        from actors import client

        return getattr(client, name)
    if name in ("deploy", "teardown"):
        from actors import deployment

        return getattr(deployment, name)
    raise AttributeError(name)
