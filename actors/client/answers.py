"""What a batch's owners answered, merged into one answer per item (the client's side of
ingest): applied, rejected (with why), or, when an owner did not answer, a 503 whose
details say for every item what became of it (``ItemOutcome``), typed so that callers
(the retry buffer, the Serve ingest) decide on the outcome, never on the wording.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from actors.cluster.adapter import Failure, FailureKind, Gathered
from actors.core.errors import StorageUnavailable, Unavailable
from actors.core.models import IngestResult, RejectedItem


class ItemOutcome(str, enum.Enum):
    """What became of one item of a batch whose call failed in part (in the 503's details,
    beside the words): callers decide on this, never on the wording."""

    NOT_APPLIED = "not_applied"  # its shard applied nothing of it: resend it
    UNKNOWN = "unknown"  # its shard missed the deadline: it may have been applied
    REJECTED = "rejected"  # processed and refused: fix it, do not resend


def item_detail(index: int, outcome: ItemOutcome, reason: str) -> dict[str, Any]:
    return {
        "field": f"signals.{index}",
        "index": index,
        "outcome": outcome.value,
        "reason": f"{outcome.value}: {reason}",
    }


def merge_register(positions: dict[int, np.ndarray], got: Gathered) -> IngestResult:
    """The per-item answer of a batch sent to its owners. When an owner did not answer,
    the whole call fails with ``Unavailable`` (a 503 at the edge), and its details say
    exactly what happened to every item not applied: a dead shard applied nothing of its
    share; a shard that missed the deadline may or may not have."""
    accepted = 0
    rejected: list[RejectedItem] = []
    missing: list[dict[str, Any]] = []
    for s, pos in positions.items():
        res = got.results.get(s)
        if res is None:
            failure = got.failures.get(s, Failure(FailureKind.UNREACHABLE, "no answer"))
            if failure.kind.applied_nothing:
                outcome, reason = ItemOutcome.NOT_APPLIED, f"shard {s} unavailable ({failure})"
            else:
                outcome = ItemOutcome.UNKNOWN
                reason = f"shard {s} did not answer in time; it may have been applied"
            missing.extend(item_detail(int(p), outcome, reason) for p in pos.tolist())
            continue
        accepted += res.accepted
        rejected.extend(
            RejectedItem(index=int(pos[r.index]), field=r.field, error=r.error)
            for r in res.rejected
        )
    rejected.sort(key=lambda r: r.index)
    if missing:
        missing.sort(key=lambda d: int(d["index"]))
        missing.extend(item_detail(r.index, ItemOutcome.REJECTED, r.error) for r in rejected)
        total = sum(len(p) for p in positions.values())
        # Every missing shard refused for its storage: the code says so, too.
        storage = all(isinstance(f.error, StorageUnavailable) for f in got.failures.values())
        raise (StorageUnavailable if storage else Unavailable)(
            f"{accepted} of {total} signals applied; the owners of "
            f"{len(got.failures)} shard(s) did not answer. The details list every item "
            "not applied (retry those) and every item rejected (fix those).",
            missing,
        )
    return IngestResult.model_construct(accepted=accepted, rejected=rejected)
