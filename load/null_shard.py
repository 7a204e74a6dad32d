"""The benchmark ceiling: a shard that accepts the same batches and does nothing."""

from __future__ import annotations

import os
from typing import Any

from actors.cluster.adapter import PickledCalls
from actors.core.columns import SignalColumns
from actors.core.config import ShardConfig
from actors.core.models import IngestResult


class NullShard(PickledCalls):
    """The benchmark ceiling: accepts the same batches and does nothing with them."""

    def __init__(self, shard_index: int = 0, config: ShardConfig | None = None) -> None:
        self.shard_index = shard_index

    async def ping(self) -> dict[str, Any]:
        return {"shard": self.shard_index, "pid": os.getpid(), "agents": 0}

    async def ingest(self, cols: SignalColumns) -> IngestResult:
        return IngestResult.model_construct(accepted=len(cols), rejected=[])
