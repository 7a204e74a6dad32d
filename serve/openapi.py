"""The OpenAPI side of the routes: what each can answer, and the shapes the document
shows (so an API fuzzer finds no undocumented answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel

from actors.core.models import AGENT_ID_PATTERN, MAX_SIGNALS_PER_BATCH, RejectedItem, Signal
from serve.errors import ErrorBody, documented

# What each route can answer besides success (the OpenAPI document lists them all).
AUTH = (401, 403)
READ = documented(*AUTH, 422, 500, 503)
AGENT_READ = documented(*AUTH, 404, 422, 500, 503)
WRITE = documented(400, *AUTH, 413, 415, 422, 500, 503)
SELECT = documented(400, *AUTH, 413, 415, 422, 429, 500, 503)


class IngestBody(BaseModel):
    accepted: int
    rejected: list[RejectedItem]


# An ingest route answers per-item results (IngestBody) or an error of the whole call.
INGEST = {
    207: {"model": IngestBody, "description": "Some items rejected; the valid ones applied"},
    **documented(400, 401, 413, 415, 500, 503),
    422: {
        "model": IngestBody | ErrorBody,
        "description": "No item accepted (each names its field), or a malformed body",
    },
    403: {
        "model": IngestBody | ErrorBody,
        "description": "Every rejected item was forbidden, or the role may not write",
    },
}
AssignmentPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="an assignment_id from a selection",
    ),
]
AgentPath = Annotated[
    str, Path(pattern=AGENT_ID_PATTERN, description="1-128 of A-Z a-z 0-9 . _ : @ -")
]
# The batch route reads its body itself (items are validated one by one, not by
# FastAPI), so its request schema is declared here for the OpenAPI document.
SIGNALS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["signals"],
                    "additionalProperties": False,
                    "properties": {
                        "signals": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_SIGNALS_PER_BATCH,
                            # Each item is checked on its own (a bad one is reported by
                            # index, the valid ones applied), so the envelope is what the
                            # schema enforces; an item's shape is the Signal schema.
                            "items": {
                                "type": "object",
                                "description": "a signal: "
                                + ", ".join(Signal.model_json_schema()["properties"]),
                            },
                        }
                    },
                }
            }
        },
    }
}
