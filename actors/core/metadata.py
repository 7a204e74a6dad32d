"""Agent labels (``describe``): string -> string, with an inverted index for selection.

Metadata is not signal-like: no TTL, it lives until the agent is deleted or swept. Kept by
agent id, so the table's swap-remove never re-maps it. ``max_concurrency`` is a per-row
array of ``inflight``, where it turns task counts into load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from actors.core.table import AgentTable


class Labels:
    def __init__(self, table: AgentTable) -> None:
        self.by_agent: dict[str, dict[str, str]] = {}
        self._index: dict[tuple[str, str], set[str]] = {}
        table.on_remove(lambda removed, _moved: self.forget(removed))

    def replace(self, agent_id: str, labels: Mapping[str, str]) -> None:
        """Replace the agent's labels."""
        self.forget([agent_id])
        if labels:
            self.by_agent[agent_id] = dict(labels)
            for pair in labels.items():
                self._index.setdefault(pair, set()).add(agent_id)

    def forget(self, agent_ids: Iterable[str]) -> None:
        for a in agent_ids:
            old = self.by_agent.pop(a, None)
            for pair in (old or {}).items():
                holders = self._index[pair]
                holders.discard(a)
                if not holders:
                    del self._index[pair]

    def get(self, agent_id: str) -> dict[str, str]:
        return dict(self.by_agent.get(agent_id, {}))

    def matching(self, required: Mapping[str, str]) -> set[str]:
        """Agents carrying every required label (an empty requirement matches nobody's
        labels in particular: callers skip the filter then)."""
        sets = sorted((self._index.get(pair, set()) for pair in required.items()), key=len)
        if not sets:
            return set()
        out = set(sets[0])
        for s in sets[1:]:
            out &= s
        return out

    def matches(self, agent_id: str, required: Mapping[str, str]) -> bool:
        mine = self.by_agent.get(agent_id)
        return mine is not None and all(mine.get(k) == v for k, v in required.items())
