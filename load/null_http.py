"""The null HTTP endpoint: the same proxy and replica machinery as Ripple's API, no work.

A module of its own, imported by name in the replica: defined inside a function (as it
was), Serve pickled it by value, FastAPI could not resolve ``request: Request`` there, and
every call answered 422, which the old counting took for a ceiling.
"""

from typing import Any

from fastapi import FastAPI, Request
from ray import serve

null_app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(null_app)
class Null:
    @null_app.post("/signal")
    async def signal(self, request: Request) -> dict[str, Any]:
        await request.json()
        return {"accepted": 1, "rejected": []}

    @null_app.post("/batch")
    async def batch(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"accepted": len(body["signals"]), "rejected": []}
