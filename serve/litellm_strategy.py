"""Ripple as a LiteLLM routing strategy (``pip install ".[litellm]"``).

    router = litellm.Router(model_list=[...])
    RippleRoutingStrategy.attach(router, connect_async("ripple"))

Each deployment of a model group is the Ripple agent ``litellm:<group>:<deployment id>``.
A pick is Ripple's ``balanced`` selection among the group's deployments, with an
assignment; LiteLLM's success and failure callbacks (this same object) complete it and
report:
- LATENCY: ``(mean + floor) / (mean + group mean + 2 floor)`` of the deployment's call time:
  0.5 (neutral, as an unmeasured deployment) at the group's mean, lower when faster, higher
  when slower; ``latency_floor_s`` keeps jitter of a few ms between fast calls from
  counting as a speed difference;
- AVAILABILITY: 1 when first seen (as LiteLLM assumes every deployment healthy, and so that
  a deployment with no calls yet is tried rather than ranked below proven ones) and after
  a success; 0 after a failure, for a cool-down that doubles with
  each consecutive failure (``cooldown_s`` up to ``max_cooldown_s``). When the cool-down
  ends the deployment is reported available again (half-open, as a circuit breaker): the
  next failure opens it for twice as long, a success closes it. Failures of calls sent
  before the circuit opened are the same outage and do not lengthen it.

When Ripple cannot answer, a pick falls back to a random deployment of the group (LiteLLM's
``simple-shuffle``) and says so in the log; callbacks that cannot reach Ripple are dropped.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.types.router import CustomRoutingStrategyBase

from actors.client.clients import AsyncRippleClient
from actors.core.models import Weights

log = logging.getLogger(__name__)

_NOT_IN_IDS = re.compile(r"[^A-Za-z0-9._:@-]")
# Weight of the newest call in a deployment's mean latency.
LATENCY_EWMA_ALPHA = 0.3


def agent_id_of(group: str, deployment_id: str) -> str:
    """Ripple ids allow ``[A-Za-z0-9._:@-]``; LiteLLM group names may hold anything else."""
    return _NOT_IN_IDS.sub("_", f"litellm:{group}:{deployment_id}")[:128]


class RippleRoutingStrategy(CustomRoutingStrategyBase, CustomLogger):
    """Picks with Ripple; learns from LiteLLM's outcome callbacks."""

    def __init__(
        self,
        router: Any,
        client: AsyncRippleClient,
        weights: dict[str, float] | None = None,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 300.0,
        signal_ttl_s: float = 300.0,
        latency_floor_s: float = 0.05,
        max_concurrency: int | None = None,
        seed: int | None = None,
    ) -> None:
        CustomLogger.__init__(self)
        self.router = router
        self.client = client
        self.weights = Weights.model_validate(
            weights or {"load": 0.4, "latency": 0.2, "availability": 0.4}
        )
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.signal_ttl_s = signal_ttl_s
        self.latency_floor_s = latency_floor_s
        self.max_concurrency = max_concurrency
        self.rng = random.Random(seed)
        self.agent_of: dict[str, str] = {}  # deployment id -> agent id
        self.group_of: dict[str, str] = {}  # agent id -> model group
        self.latency_s: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.open_until: dict[str, float] = {}
        self.picks_by_ripple = 0
        self.picks_by_fallback = 0

    @classmethod
    def attach(
        cls, router: Any, client: AsyncRippleClient, **options: Any
    ) -> RippleRoutingStrategy:
        """Make this the router's strategy and one of LiteLLM's callbacks."""
        import litellm

        strategy = cls(router, client, **options)
        register = getattr(router, "register_plugin", None) or router.set_custom_routing_strategy
        register(strategy)
        litellm.callbacks = [*litellm.callbacks, strategy]
        return strategy

    # ------------------------------------------------------------------ picks
    def _deployments(self, model: str) -> list[Any]:
        registry = getattr(self.router, "registry", None)
        everything: Sequence[Any] = registry().all() if registry else self.router.model_list
        return [d for d in everything if d["model_name"] == model]

    async def async_get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Any:
        deployments = self._deployments(model)
        if not deployments:
            return None
        by_agent: dict[str, Any] = {}
        for d in deployments:
            dep_id = str(d["model_info"]["id"])
            agent = self.agent_of.setdefault(dep_id, agent_id_of(model, dep_id))
            by_agent[agent] = d
        try:
            await self._describe_new(model, by_agent)
            await self._half_open(list(by_agent))
            got = await self.client.select(
                candidates=list(by_agent), k=1, weights=self.weights, strategy="balanced"
            )
            self.picks_by_ripple += 1
            return by_agent[got.selected[0].agent_id]
        except Exception as e:  # Ripple unreachable or degraded: LiteLLM's simple-shuffle
            log.warning("Ripple could not pick for %s, picking at random: %s", model, e)
            self.picks_by_fallback += 1
            return self.rng.choice(deployments)

    def get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Any:
        """Synchronous calls (``router.completion``) cannot await Ripple: simple-shuffle."""
        deployments = self._deployments(model)
        self.picks_by_fallback += 1
        return self.rng.choice(deployments) if deployments else None

    async def _describe_new(self, group: str, by_agent: dict[str, Any]) -> None:
        new = [a for a in by_agent if a not in self.group_of]
        for agent in new:
            d = by_agent[agent]
            params = d["litellm_params"]
            limit = self.max_concurrency or params.get("max_parallel_requests")
            await self.client.describe(
                agent,
                max_concurrency=int(limit) if limit else None,
                labels={"source": "litellm", "model_group": group[:256]},
            )
            self.group_of[agent] = group
        if new:
            await self.client.register(
                [self._signal(a, "AVAILABILITY", 1.0, self.signal_ttl_s) for a in new]
            )

    async def _half_open(self, agents: list[str]) -> None:
        """Deployments whose cool-down ended are offered traffic again."""
        now = time.monotonic()
        due = [a for a in agents if a in self.open_until and self.open_until[a] <= now]
        if not due:
            return
        for a in due:
            del self.open_until[a]
        await self.client.register(
            [self._signal(a, "AVAILABILITY", 1.0, self.cooldown_s) for a in due]
        )

    # ------------------------------------------------------------------ outcomes
    def _agent(self, kwargs: dict[str, Any]) -> str | None:
        info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        return self.agent_of.get(str(info.get("id")))

    @staticmethod
    def _seconds(start: Any, end: Any) -> float | None:
        took = end - start
        seconds = took.total_seconds() if isinstance(took, timedelta) else float(took)
        return seconds if seconds >= 0 else None

    def _signal(self, agent: str, kind: str, value: float, ttl_s: float) -> dict[str, Any]:
        return {"agent_id": agent, "signal_type": kind, "value": value, "ttl_s": ttl_s}

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        agent = self._agent(kwargs)
        if agent is None:
            return
        took_s = self._seconds(start_time, end_time)
        self.failures.pop(agent, None)
        self.open_until.pop(agent, None)
        signals = [self._signal(agent, "AVAILABILITY", 1.0, self.signal_ttl_s)]
        if took_s is not None:
            old = self.latency_s.get(agent)
            self.latency_s[agent] = (
                took_s if old is None else old + LATENCY_EWMA_ALPHA * (took_s - old)
            )
            group = self.group_of.get(agent)
            peers = [v for a, v in self.latency_s.items() if self.group_of.get(a) == group]
            own_s = self.latency_s[agent] + self.latency_floor_s
            mean_s = sum(peers) / len(peers) + self.latency_floor_s
            signals.append(
                self._signal(agent, "LATENCY", own_s / (own_s + mean_s), self.signal_ttl_s)
            )
        await self._report(agent, True, took_s, signals)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        agent = self._agent(kwargs)
        if agent is None:
            return
        took_s = self._seconds(start_time, end_time)
        now = time.monotonic()
        if self.open_until.get(agent, 0.0) > now:
            # Sent before the circuit opened: the same outage, not a failed retry.
            await self._report(agent, False, took_s, [])
            return
        n = self.failures[agent] = self.failures.get(agent, 0) + 1
        cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2 ** (n - 1))
        self.open_until[agent] = now + cooldown_s
        signals = [self._signal(agent, "AVAILABILITY", 0.0, cooldown_s)]
        await self._report(agent, False, took_s, signals)

    async def _report(
        self, agent: str, ok: bool, took_s: float | None, signals: list[dict[str, Any]]
    ) -> None:
        try:
            await self.client.complete(agent, ok=ok, duration_s=took_s)
            if signals:
                await self.client.register(signals)
        except Exception as e:  # an outcome lost is soft state; the next one corrects it
            log.warning("Ripple did not take the outcome of %s: %s", agent, e)
