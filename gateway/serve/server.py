"""Serving the app: hypercorn's connections under the gateway's own serving loop, in the CLI,
in each ``--workers`` process (``workers.py``), or inside a caller's nursery (``running``).

Why not ``hypercorn.trio.serve``: its shutdown (hypercorn 0.18, ``trio/run.py:worker_serve``
and ``trio/tcp_server.py``) loses requests on kept-alive connections and can wait for nothing.
At shutdown it sets ``context.terminated``, and every idle connection's timer
(``TCPServer._idle_timeout``) closes its socket inside a shield, unconditionally: a request
read in the same scheduling pass (the reader's ``Updated(idle=False)`` cancels the timer one
checkpoint too late) reaches the app, which answers into a closed socket; half a request head
counts as idle and is cut. And a connection that closes after a response with a pipelined
request behind it (``protocol/h11.py:_maybe_recycle``, its close branch) leaves the reader
parked on ``can_read`` for a turn that never comes (``_handle_events``, ``h11.PAUSED``):
shutdown then waits out the whole graceful timeout (drain + settle + 2 s: 127 s by default).

Rules this module keeps (the drain itself, for requests the app holds, is ``Gateway``'s):

1. Shutdown is one step, whoever asks (SIGTERM, the supervisor, the supervisor's death,
   ``Running.stop``): stop accepting, the gateway drains (``Gateway.begin_drain``: new
   requests get 503), and no connection is kept alive any more. From then on every response
   says ``Connection: close`` (``http/dispatch.py``) and the connection closes after it.
2. The server closes a kept-alive connection only when nothing of a request has arrived on
   it: not in h11's buffer, not in the socket. A request head on its way in gets
   ``REQUEST_HEAD_GRACE`` to arrive whole and is then answered; one the reader has taken is
   never cut. (A request that arrives after the close meets a closed connection: "closed
   before it was read", which a client may retry elsewhere.)
3. A connection the server has closed stops reading at once.
4. The server waits for connections only while a request is open on them; the graceful
   timeout stays as the backstop behind the gateway's own drain and settle deadlines.
"""

from __future__ import annotations

import gc
import logging
import select
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import h11
import hypercorn.config
import trio
from hypercorn.config import Sockets
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import LifespanFailureError, repr_socket_addr, wrap_app

from gateway.app import create_app
from gateway.config import Config
from gateway.http.dispatch import Dispatcher
from gateway.serve import framing
from gateway.service import Gateway

framing.install()  # strict request framing for every connection this process serves

# A request head that had begun to arrive when the drain began gets this long to complete
# (rule 2). A client sends a head in one write; this covers a slow link, and bounds how long
# a half-sent head can hold a stopping process.
REQUEST_HEAD_GRACE = 1.0

# Python's default first-generation threshold (700 allocations) runs the collector about
# every other request here; a request's objects die with it, mostly young. Measured on
# scenario (a), 1000 streams at c=50, in-process: GC took 0.46 s of 3.95 s of CPU by
# default, 0.18 s of 3.74 s with the startup objects frozen and this threshold.
GC_THRESHOLD = (7000, 10, 10)


def tune_gc() -> None:
    """For a serving process, once its app is built: the objects made at startup (modules,
    config, tables) leave the collector's view for good, and young collections run a tenth
    as often. Cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


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
    # drain deadline with a terminal event, then settles; only after that is anything cut.
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


class _Connection(TCPServer):
    """One client connection: hypercorn's, with its idle close made safe (rule 2) and its
    reader stopped when the server closes the connection (rule 3)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._reading = trio.CancelScope()

    async def _read_data(self) -> None:
        with self._reading:
            await super()._read_data()
        await self.protocol.handle(Closed())  # what the cancelled reader skipped (idempotent)
        # Nothing is left for the idle timer to guard: without this, a connection the client
        # closed while idle (and its socket) would wait out keep_alive_timeout.
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if type(event) is RawData and not self.send_lock.locked():
            # The common case: no other send in flight and room in the socket's buffer.
            # Written here and now, with no lock taken and no scheduler pass (hypercorn's
            # path costs two, the lock's and the socket's, per body message); only what the
            # kernel did not take goes the shielded, locked way below, in order.
            try:
                sent = self.stream.socket._sock.send(event.data)  # non-blocking (trio's)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1  # broken: hypercorn's path finds out again and closes
            if sent == len(event.data):
                return
            if sent > 0:
                event = RawData(data=event.data[sent:])
        await super().protocol_send(event)
        if isinstance(event, Closed):
            # Closed by the server (a response with Connection: close, or no keep-alive
            # during the drain). A pipelined request behind it would leave the reader parked
            # until the graceful timeout: nothing more will be read here.
            self._reading.cancel("the server closed the connection")

    async def _idle_timeout(self) -> None:
        if not isinstance(self.protocol.protocol, H11Protocol):
            await super()._idle_timeout()  # h2: hypercorn's own GOAWAY handling
            return
        with trio.move_on_after(self.config.keep_alive_timeout):
            await self.context.terminated.wait()
            if self._arriving():
                await trio.sleep(REQUEST_HEAD_GRACE)  # cancelled once the head is whole
        with trio.CancelScope(shield=True):
            # No checkpoint between this check and the socket's close: the reader cannot
            # take a request in between.
            if not self._request_taken():
                await self._initiate_server_close()

    def _request_taken(self) -> bool:
        """The reader has parsed a request head: the request will be answered."""
        connection = self.protocol.protocol.connection
        return not isinstance(connection, h11.Connection) or connection.their_state is not h11.IDLE

    def _arriving(self) -> bool:
        """Part of a request is in h11's buffer or waits in the socket (or the peer closed:
        the reader then ends the connection itself)."""
        connection = self.protocol.protocol.connection
        if isinstance(connection, h11.Connection) and connection.trailing_data[0]:
            return True
        fileno = self.stream.socket.fileno()
        if fileno < 0:
            return False
        poller = select.poll()  # not select(): descriptors above 1023 are common here
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))


async def serve(
    app: Dispatcher[Gateway],
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    hconfig: hypercorn.config.Config | None = None,
    sockets: Sockets | None = None,
) -> None:
    """Serve until ``shutdown_trigger`` returns, then drain and return once every request
    has settled and the app has shut down. ``task_status`` gets the bound URLs. A worker
    passes the supervisor's ``hconfig`` and listening ``sockets``; otherwise they are made
    here from ``config``."""
    hconfig = hconfig or hypercorn_config(config)
    if sockets is None:
        sockets = hconfig.create_sockets()
        for sock in sockets.insecure_sockets:
            sock.listen(hconfig.backlog)
    # TLS terminates in front of the gateway (deploy/nginx): plain HTTP only.
    assert not sockets.secure_sockets and not sockets.quic_sockets
    wrapped = wrap_app(app, hconfig.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, hconfig, state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        if not app.gateway.ready:
            # hypercorn's startup returns (its event is set in a ``finally``) even when the
            # app's startup failed: never report "listening" for a gateway that cannot serve.
            raise LifespanFailureError("startup", "the gateway did not start")
        async with trio.open_nursery() as connections:
            try:
                listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                             for sock in sockets.insecure_sockets]
                connection = partial(_Connection, wrapped, hconfig, context,
                                     ConnectionState(state.copy()))
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(trio.serve_listeners, connection, listeners,
                                                 handler_nursery=connections))
                    task_status.started([
                        f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
                        for sock in sockets.insecure_sockets])
                    await shutdown_trigger()
                    app.gateway.begin_drain()
                    accepting.cancel_scope.cancel("shutting down")  # listeners close
            finally:
                await context.terminated.set()  # no keep-alive; idle connections close
                connections.cancel_scope.deadline = (
                    trio.current_time() + hconfig.graceful_timeout)
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel("served and shut down")


@attrs.frozen
class Running:
    url: str  # http://127.0.0.1:PORT
    app: Dispatcher[Gateway]
    _stop: trio.Event

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.gateway
        return gateway

    def stop(self) -> None:
        """Begin the shutdown now, as SIGTERM would (the block's exit then waits for it)."""
        self._stop.set()


@asynccontextmanager
async def running(
    config: Config, *, clock: Callable[[], float] = trio.current_time
) -> AsyncIterator[Running]:
    """A gateway serving ``config`` (port 0 picks a free port) for the duration of the block;
    ``clock`` as in ``create_app``."""
    app = create_app(config, clock=clock)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield Running(urls[0], app, stop)
        finally:
            stop.set()
