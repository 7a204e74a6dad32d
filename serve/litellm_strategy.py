"""Ripple as a LiteLLM routing strategy (``pip install ".[litellm]"``).

    router = litellm.Router(model_list=[...])
    RippleRoutingStrategy.attach(router, connect_async("ripple"))

Each deployment of a model group is the Ripple agent ``litellm:<group>:<deployment id>``
(described with the deployment's ``max_parallel_requests`` as its ``max_concurrency``).
A pick is Ripple's selection among the group's deployments, with an assignment, under
Ripple's defaults (``balanced``, default weights). LiteLLM's success and failure callbacks
(this same object) complete the assignment with ``ok`` and the call's duration, and that
is all: what the outcomes teach (health with ejection, probing and back-off, a speed
measured from durations, ``predicted_s``) is Ripple's core, shared by every router of the
deployment, not a cool-down kept in one process. Run LiteLLM with its own cool-downs off
(``disable_cooldowns=True``): Ripple's ejections replace them.

Flow control: a request's ``metadata`` may carry ``priority`` (0-9), ``tenant`` and
``wait_s`` (else LiteLLM's own ``priority`` argument, and its ``user`` as the tenant;
``wait_s`` defaults to the strategy's). When every deployment of the group is at its
``max_parallel_requests`` and nothing frees within ``wait_s``, Ripple says saturated and
the pick raises ``litellm.RateLimitError`` (HTTP 429, with Ripple's ``Retry-After``), so
LiteLLM's own retries, back-off and fallbacks to other model groups apply.

When Ripple cannot answer, a pick falls back to a random deployment of the group (LiteLLM's
``simple-shuffle``) and says so in the log; callbacks that cannot reach Ripple are dropped.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from litellm.types.router import CustomRoutingStrategyBase

from actors.client.clients import AsyncRippleClient
from actors.core.errors import Saturated
from actors.core.models import Weights

log = logging.getLogger(__name__)

_NOT_IN_IDS = re.compile(r"[^A-Za-z0-9._:@-]")
MAX_PENDING_CALLS = 10_000  # picks whose outcome has not come back yet


def agent_id_of(group: str, deployment_id: str) -> str:
    """Ripple ids allow ``[A-Za-z0-9._:@-]``; LiteLLM group names may hold anything else."""
    return _NOT_IN_IDS.sub("_", f"litellm:{group}:{deployment_id}")[:128]


class RippleRoutingStrategy(CustomRoutingStrategyBase, CustomLogger):
    """Picks with Ripple; reports LiteLLM's outcomes to it."""

    def __init__(
        self,
        router: Any,
        client: AsyncRippleClient,
        weights: dict[str, float] | None = None,
        max_concurrency: int | None = None,
        seed: int | None = None,
        wait_s: float = 0.0,
    ) -> None:
        CustomLogger.__init__(self)
        self.router = router
        self.client = client
        # None: the service's default weights (what every other router of it uses).
        self.weights = None if weights is None else Weights.model_validate(weights)
        self.max_concurrency = max_concurrency
        self.wait_s = wait_s
        self.rng = random.Random(seed)
        self.agent_of: dict[str, str] = {}  # deployment id -> agent id
        self.group_of: dict[str, str] = {}  # agent id -> model group
        # LiteLLM call id -> the assignment its pick opened (so the outcome closes that
        # task, not the agent's oldest); bounded: a call whose outcome never comes goes.
        self.assignment_of: OrderedDict[str, str] = OrderedDict()
        self.picks_by_ripple = 0
        self.picks_by_fallback = 0
        self.picks_saturated = 0
        # Outcomes LiteLLM handed over (its callbacks run after the caller has its answer),
        # and those Ripple did not take.
        self.outcomes_reported = 0
        self.outcomes_lost = 0

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
            got = await self.client.select(
                candidates=list(by_agent), k=1, weights=self.weights, **self._flow(request_kwargs)
            )
            self.picks_by_ripple += 1
            pick = got.selected[0]
            call_id = (request_kwargs or {}).get("litellm_call_id")
            if call_id is not None and pick.assignment_id is not None:
                self.assignment_of[str(call_id)] = pick.assignment_id
                while len(self.assignment_of) > MAX_PENDING_CALLS:
                    self.assignment_of.popitem(last=False)
            return by_agent[pick.agent_id]
        except Saturated as full:  # LiteLLM's retries and fallbacks take it from here
            self.picks_saturated += 1
            raise _rate_limited(model, full) from full
        except Exception as e:  # Ripple unreachable or degraded: LiteLLM's simple-shuffle
            log.warning("Ripple could not pick for %s, picking at random: %s", model, e)
            self.picks_by_fallback += 1
            return self.rng.choice(deployments)

    def _flow(self, request_kwargs: dict[str, object] | None) -> dict[str, Any]:
        """The request's priority, tenant and wait for Ripple's flow control."""
        kw = request_kwargs or {}
        meta = kw.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        out: dict[str, Any] = {"wait_s": float(meta.get("wait_s", self.wait_s))}
        priority = meta.get("priority", kw.get("priority"))
        if isinstance(priority, int) and 0 <= priority <= 9:
            out["priority"] = priority
        tenant = meta.get("tenant", kw.get("user"))
        if isinstance(tenant, str) and 0 < len(tenant) <= 128:
            out["tenant"] = tenant
        return out

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
        for agent in [a for a in by_agent if a not in self.group_of]:
            params = by_agent[agent]["litellm_params"]
            limit = self.max_concurrency or params.get("max_parallel_requests")
            await self.client.describe(
                agent,
                max_concurrency=int(limit) if limit else None,
                labels={"source": "litellm", "model_group": group[:256]},
            )
            self.group_of[agent] = group

    # ------------------------------------------------------------------ outcomes
    def _agent(self, kwargs: dict[str, Any]) -> str | None:
        info = (kwargs.get("litellm_params") or {}).get("model_info") or {}
        return self.agent_of.get(str(info.get("id")))

    @staticmethod
    def _seconds(start: Any, end: Any) -> float | None:
        took = end - start
        seconds = took.total_seconds() if isinstance(took, timedelta) else float(took)
        return seconds if seconds >= 0 else None

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        await self._report(kwargs, True, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        await self._report(kwargs, False, start_time, end_time)

    async def _report(self, kwargs: dict[str, Any], ok: bool, start: Any, end: Any) -> None:
        agent = self._agent(kwargs)
        if agent is None:
            return
        call_id = kwargs.get("litellm_call_id")
        assignment_id = self.assignment_of.pop(str(call_id), None) if call_id else None
        try:
            await self.client.complete(
                agent, assignment_id, ok=ok, duration_s=self._seconds(start, end)
            )
        except Exception as e:  # an outcome lost is soft state; the next one corrects it
            self.outcomes_lost += 1
            log.warning("Ripple did not take the outcome of %s: %s", agent, e)
        finally:
            self.outcomes_reported += 1


def _rate_limited(model: str, full: Saturated) -> Exception:
    import litellm

    retry_after = str(max(1, math.ceil(full.retry_after_s)))
    return litellm.RateLimitError(
        f"Ripple: every deployment of {model} is at its concurrency ({full.reason})",
        llm_provider="ripple",
        model=model,
        headers={"retry-after": retry_after},
    )
