"""Ripple's coordination core and the Ray actors that host it.

``import actors`` stays light (no Ray import) so the plain core can be used and tested
without a cluster; the Ray entry points below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from actors.core.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotDeployed,
    NotFound,
    PayloadTooLarge,
    RippleError,
    Saturated,
    Unavailable,
)

__all__ = [
    "DeadlineExceeded",
    "InvalidInput",
    "NotDeployed",
    "NotFound",
    "PayloadTooLarge",
    "RippleError",
    "Saturated",
    "Unavailable",
    "connect",
    "connect_async",
    "deploy",
    "teardown",
]
_LAZY = {
    "connect": "actors.client",
    "connect_async": "actors.client",
    "deploy": "actors.client",
    "teardown": "actors.cluster.deployment",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
