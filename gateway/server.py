"""Serving the app with hypercorn's trio worker, in the CLI or inside a caller's nursery.

``running(config)`` starts a whole gateway on a loopback port inside the caller's task tree
and stops it gracefully on exit: the tests and benchmarks use it, so they exercise the same
composition and server settings as ``arouter serve``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.config import Sockets

from gateway.app import Gateway, create_app
from gateway.asgi import Dispatcher
from gateway.config import Config


class _Config(hypercorn.config.Config):
    """Hypercorn's config, with listening sockets whose accepted connections give up on a
    peer that acknowledges nothing for ``client_stall`` seconds (a client that stopped
    reading). Hypercorn shields every socket write without a deadline, so this kernel
    timer is the only thing that can end such a write; the watcher then sees the
    disconnect and the request settles as ``client_abort``."""

    user_timeout_ms: int = 60_000

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            if hasattr(socket, "TCP_USER_TIMEOUT") and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                self.user_timeout_ms)
        return sockets


def hypercorn_config(config: Config) -> hypercorn.config.Config:
    hconfig = _Config()
    hconfig.bind = [f"{config.host}:{config.port}"]
    hconfig.user_timeout_ms = int(config.deadlines.client_stall * 1000)
    # Streams are ended by the gateway's own deadlines, never by the server's timers: on
    # shutdown the gateway drains (``Gateway.begin_drain``) and ends what is left at the
    # drain deadline with a terminal event, then settles; hypercorn only cancels after that.
    deadlines = config.deadlines
    hconfig.graceful_timeout = config.graceful_timeout or (
        deadlines.drain + deadlines.settle + 2.0)
    hconfig.keep_alive_timeout = config.keep_alive_timeout
    hconfig.accesslog = None
    # Hypercorn's default listen backlog is 100: a burst of connections beyond it waits for
    # SYN retransmits (1 s, 3 s, ...). The kernel caps this at net.core.somaxconn.
    hconfig.backlog = 4096
    hconfig.errorlog = logging.getLogger("hypercorn.error")  # into ours, not a second handler
    return hconfig


async def serve(
    app: Dispatcher,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; ``task_status`` gets the bound URLs."""

    async def stopping() -> None:
        await shutdown_trigger()
        # Readiness flips and new requests are refused the moment shutdown begins; open
        # ones may run until the drain deadline.
        app.gateway.begin_drain()

    await hypercorn.trio.serve(
        app,  # type: ignore[arg-type]  # hypercorn's ASGI typing is narrower than the protocol
        hypercorn_config(config),
        shutdown_trigger=stopping,
        task_status=task_status,
    )


@attrs.frozen
class Running:
    url: str  # http://127.0.0.1:PORT
    app: Dispatcher

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.gateway
        return gateway


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Running]:
    """A gateway serving ``config`` (port 0 picks a free port) for the duration of the block."""
    app = create_app(config)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield Running(urls[0], app)
        finally:
            stop.set()
