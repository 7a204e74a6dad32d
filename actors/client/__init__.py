"""Clients for Ray workloads: sync and async, one implementation (``ops``)."""

from actors.client.buffer import SignalBuffer
from actors.client.clients import (
    AsyncRippleClient,
    RippleClient,
    connect,
    connect_async,
    deploy,
    wait_until_ready,
)

__all__ = [
    "AsyncRippleClient",
    "RippleClient",
    "SignalBuffer",
    "connect",
    "connect_async",
    "deploy",
    "wait_until_ready",
]
