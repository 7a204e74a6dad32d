from __future__ import annotations

from typing import Any


def sig(agent_id: str, signal_type: str, value: float, **kw: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "signal_type": signal_type, "value": value, **kw}
