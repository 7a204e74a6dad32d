"""What a batch of signals changes on a shard (DESIGN §4, "Signals"): validated item by
item, journalled, then written to the history, the live signals and the in-flight
reconciliation. ``ShardState`` composes it, as it does the others.

A bad item is refused with its reason and the valid ones are applied; a timestamp a few
seconds ahead (clock skew) counts from receipt; a sample already expired on arrival (a
backfill) goes into history only, never live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from actors.core import wal
from actors.core.admission import Admission
from actors.core.columns import SignalColumns, validate
from actors.core.config import ShardConfig
from actors.core.history import History
from actors.core.inflight import InFlight
from actors.core.metrics import Counters
from actors.core.models import LOAD_CODE, IngestResult
from actors.core.signals import LiveSignals
from actors.core.table import AgentTable
from actors.core.tasks import Log


@dataclass
class Intake:
    cfg: ShardConfig
    table: AgentTable
    hist: History
    signals: LiveSignals
    inflight: InFlight
    admission: Admission
    metrics: Counters
    log: Log  # journals one change before it is applied (``ShardState._log``)

    def ingest(self, cols: SignalColumns, now: float) -> IngestResult:
        t0 = time.perf_counter()
        cfg, table = self.cfg, self.table
        known = table.lookup(cols.agent_ids)
        vb = validate(
            cols,
            now,
            max_ttl_s=cfg.max_ttl_s,
            max_future_skew_s=cfg.max_future_skew_s,
            known_rows=known,
        )
        idx = vb.index
        if len(idx):
            codes = cols.type_codes[idx]
            vals = cols.values[idx]
            # A timestamp a few seconds ahead is clock skew: age and expiry count from receipt.
            ts = np.minimum(vb.effective_ts_s[idx], now)
            confidences, ttls = cols.confidences[idx], cols.ttls_s[idx]
            # Logged before anything changes: a record the storage refused leaves no trace.
            self.log(
                lambda: wal.encode_ingest(
                    now,
                    SignalColumns(
                        agent_ids=[cols.agent_ids[i] for i in idx.tolist()],
                        type_codes=codes,
                        values=vals,
                        confidences=confidences,
                        ttls_s=ttls,
                        timestamps_s=ts,
                    ),
                )
            )
            rows = table.rows_creating(cols.agent_ids, idx, known[idx])
            self.hist.write(rows, codes, vals, ts)
            # A backfilled sample (expired on arrival) goes into history, never live.
            live = vb.live[idx]
            r, c, t = self.signals.write(
                rows[live],
                codes[live],
                vals[live],
                confidences[live],
                ttls[live],
                ts[live],
                now,
            )
            self.admission.freed()  # a lower LOAD, or a new agent: maybe a free slot
            is_load = c == LOAD_CODE
            if is_load.any():
                self.inflight.on_load(
                    r[is_load], self.table["val"][LOAD_CODE, r[is_load]], t[is_load]
                )
        self.metrics.record_ingest(
            cols.type_codes[idx], vb.reasons, time.perf_counter() - t0, len(cols)
        )
        return IngestResult.model_construct(accepted=len(idx), rejected=vb.rejected)
