"""The one place that talks to Ray: per-shard calls, fan-out, deadlines, shard failures.

The router actor and the Python client both use ``Fanout``; unit tests drive it with a
fake ``Transport`` (see ``tests/unit/test_fanout.py``), so the degraded-answer logic is
tested without a cluster.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import pickle
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from actors.core.errors import DeadlineExceeded, InternalError, RippleError, Unavailable

log = logging.getLogger(__name__)


class Transport(Protocol):
    """How a call reaches shard ``i``; Ray's version is ``RayTransport``."""

    num_shards: int

    def submit(self, shard: int, method: str, args: tuple[Any, ...]) -> Any: ...

    def wait(self, refs: list[Any], timeout_s: float) -> tuple[list[Any], list[Any]]: ...

    def get(self, ref: Any) -> Any: ...

    def awaitable(self, ref: Any) -> Awaitable[Any]: ...

    def is_outage(self, exc: BaseException) -> bool:
        """True when the shard could not answer (dead, restarting, unreachable), as
        opposed to a shard that answered with an exception (a bug)."""
        ...


class FailureKind(enum.Enum):
    """Why a shard gave no answer, which decides what the caller may assume."""

    NO_ANSWER = "no_answer"  # missed the deadline: the call may or may not have applied
    UNREACHABLE = "unreachable"  # dead, restarting or unreachable: it applied nothing
    REFUSED = "refused"  # answered Unavailable (overloaded, storage): it applied nothing

    @property
    def applied_nothing(self) -> bool:
        return self is not FailureKind.NO_ANSWER


@dataclass(frozen=True)
class Failure:
    """One shard's missing answer: its kind (typed, for decisions) and words (for people:
    free to change). ``error``: what a refusing shard raised, kept whole so its code
    (e.g. ``storage_unavailable``) reaches the caller."""

    kind: FailureKind
    reason: str
    error: Unavailable | None = None

    def __str__(self) -> str:
        return self.reason


@dataclass
class Gathered:
    """Answers by shard, and why the others did not answer."""

    results: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, Failure] = field(default_factory=dict)
    asked: int = 0

    @property
    def answered(self) -> int:
        return len(self.results)

    @property
    def degraded(self) -> bool:
        return self.answered < self.asked


def unwrap(exc: BaseException) -> BaseException:
    """A RippleError raised inside a shard comes back wrapped; hand back the original."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RippleError):
        return cause
    return exc


class Fanout:
    def __init__(self, transport: Transport, deadline_s: float) -> None:
        self.transport = transport
        self.deadline_s = deadline_s

    @property
    def num_shards(self) -> int:
        return self.transport.num_shards

    def _classify(self, exc: BaseException, out: Gathered, shard: int) -> None:
        """Three classes: the caller's mistake (re-raised, a 4xx), an outage (this shard
        counts as not answering: a degraded answer or a 503), a bug (a 500; the
        traceback is logged here, and only the exception's type travels on)."""
        real = unwrap(exc)
        if isinstance(real, RippleError) and not isinstance(real, Unavailable):
            raise real  # the request itself is wrong: every shard would say the same
        reason = f"{type(real).__name__}: {real}"
        if isinstance(real, Unavailable):
            out.failures[shard] = Failure(FailureKind.REFUSED, reason, real)
            return
        if self.transport.is_outage(exc):
            out.failures[shard] = Failure(FailureKind.UNREACHABLE, reason)
            return
        log.error("shard %d raised %s", shard, type(real).__name__, exc_info=exc)
        raise InternalError(f"shard {shard} failed with {type(real).__name__}")

    async def gather(self, calls: dict[int, tuple[str, tuple[Any, ...]]]) -> Gathered:
        """Call each shard in parallel; whatever misses the deadline counts as failed."""
        out = Gathered(asked=len(calls))
        if not calls:
            return out
        tasks = {
            asyncio.ensure_future(self.transport.awaitable(self.transport.submit(s, m, a))): s
            for s, (m, a) in calls.items()
        }
        done, pending = await asyncio.wait(tasks, timeout=self.deadline_s)
        for task in pending:
            task.cancel()
            out.failures[tasks[task]] = self._late()
        for task in done:
            exc = task.exception()
            if exc is None:
                out.results[tasks[task]] = task.result()
            else:
                self._classify(exc, out, tasks[task])
        return out

    def gather_sync(self, calls: dict[int, tuple[str, tuple[Any, ...]]]) -> Gathered:
        out = Gathered(asked=len(calls))
        refs = {s: self.transport.submit(s, m, a) for s, (m, a) in calls.items()}
        by_ref = {id(r): s for s, r in refs.items()}
        ready, pending = self.transport.wait(list(refs.values()), self.deadline_s)
        for ref in pending:
            out.failures[by_ref[id(ref)]] = self._late()
        for ref in ready:
            try:
                out.results[by_ref[id(ref)]] = self.transport.get(ref)
            except Exception as exc:
                self._classify(exc, out, by_ref[id(ref)])
        return out

    def _late(self) -> Failure:
        return Failure(FailureKind.NO_ANSWER, f"no answer within {self.deadline_s:g} s")

    @staticmethod
    def one(gathered: Gathered, shard: int) -> Any:
        """The single answer of a call that needed exactly one shard, or a typed error."""
        if shard in gathered.results:
            return gathered.results[shard]
        failure = gathered.failures.get(shard, Failure(FailureKind.UNREACHABLE, "no answer"))
        if failure.error is not None:
            raise failure.error
        err = DeadlineExceeded if failure.kind is FailureKind.NO_ANSWER else Unavailable
        detail = [{"field": "shard", "reason": failure.reason}]
        raise err(f"shard {shard} is unavailable", detail)

    def all_ok(self, gathered: Gathered) -> None:
        """Raise when no shard answered at all; partial answers are the caller's to mark."""
        if gathered.asked and not gathered.answered:
            raise Unavailable(
                "no shard answered",
                [
                    {"field": f"shard {s}", "reason": r.reason}
                    for s, r in sorted(gathered.failures.items())
                ],
            )


class PickledCalls:
    """Mixed into every actor ``RayTransport`` calls: ``call`` runs one of the actor's
    methods on arguments the caller pickled and pickles the answer.

    Ray ships bytes (and ints, strings, lists) with msgpack, but anything else (a
    pydantic model, a dataclass, a numpy array) through its pickle-5 path with
    out-of-band buffers, at a fixed cost of 0.1-0.2 ms per object each way here: half as
    much again as an empty actor call for a one-signal batch or a shard's part of a
    selection. Plain pickle of the same objects takes about 10 µs."""

    async def call(self, method: str, blob: bytes) -> bytes:
        result = getattr(self, method)(*pickle.loads(blob))
        if inspect.isawaitable(result):
            result = await result
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


T = TypeVar("T")
Calls = dict[int, tuple[str, tuple[Any, ...]]]
# An "op": the logic of one call, written once for every caller (sans-I/O, as h11 does
# it). It yields (fanout, calls), is sent the Gathered answers, and returns the result.
Op = Generator[tuple[Fanout, Calls], Gathered, T]


def drive_sync(op: Op[T]) -> T:
    """Run ``op`` blocking (drivers, tasks, threads)."""
    try:
        fanout, calls = next(op)
        while True:
            fanout, calls = op.send(fanout.gather_sync(calls))
    except StopIteration as done:
        return done.value


async def drive(op: Op[T]) -> T:
    """Run ``op`` on the running event loop (actors, Serve replicas, asyncio programs)."""
    try:
        fanout, calls = next(op)
        while True:
            fanout, calls = op.send(await fanout.gather(calls))
    except StopIteration as done:
        return done.value


class RayTransport:
    """Calls named shard actors. Handles are resolved once and cached (the shard map)."""

    def __init__(self, handles: Sequence[Any]) -> None:
        self.handles = list(handles)
        self.num_shards = len(self.handles)

    def submit(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        blob = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
        return self.handles[shard].call.remote(method, blob)

    def wait(self, refs: list[Any], timeout_s: float) -> tuple[list[Any], list[Any]]:
        import ray

        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        return ready, pending

    def get(self, ref: Any) -> Any:
        import ray

        return pickle.loads(ray.get(ref))

    async def _await(self, ref: Any) -> Any:
        return pickle.loads(await ref)

    def is_outage(self, exc: BaseException) -> bool:
        import ray.exceptions as rex

        outages = (
            rex.RayActorError,  # died (ActorDiedError) or restarting
            rex.ActorUnavailableError,
            rex.GetTimeoutError,
            rex.ObjectLostError,
            rex.RaySystemError,
        )
        return isinstance(exc, (*outages, TimeoutError, ConnectionError))

    def awaitable(self, ref: Any) -> Awaitable[Any]:
        return self._await(ref)


def node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray), so placement can be checked."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return None


def was_restarted() -> bool:
    """Whether this actor is a restart of an earlier one (Ray re-ran its constructor)."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return False
