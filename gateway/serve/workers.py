"""``arouter serve --workers N``: N processes serving one listening socket, under a supervisor.

The supervisor binds the listening sockets (hypercorn's ``Config.create_sockets``, or the
caller's) and spawns N worker processes (multiprocessing, spawn); each runs the gateway's
own serving loop (``server.serve``) on those sockets, and the kernel spreads connections
among them. Each worker serves the supervisor's own ``Config`` object, handed over as the
process starts: one source of truth, whatever came from the file, the environment or the
command line (nothing is re-read in the worker, so nothing can differ).

    supervisor gets         it does
    first SIGTERM/SIGINT    closes its listening socket; SIGUSR1 to each worker: drain
    second                  SIGUSR2 to each worker: end open streams now (each still gets
                            its terminal event and ledger row)
    SIGUSR1 from a worker   that worker was signalled directly: drain them all (never
                            escalates: with systemd's control-group kill every process gets
                            SIGTERM, and each worker reports it)
    a worker's exit         the others drain and stop

A worker that drains stops accepting at once, answers new requests on open connections
with 503 and closes idle ones (``server.py``), lets open requests run until the drain
deadline, settles them and exits. Rules:

1. The supervisor reacts at once: a signal wakes its wait through ``signal.set_wakeup_fd``,
   a worker's exit through its sentinel. Nothing polls.
2. A worker never outlives its supervisor serving. It watches its end of the supervisor's
   pipe (multiprocessing's parent sentinel: readable once the supervisor is gone, however
   it died, SIGKILL included) and then drains as above and exits. Every process then has
   closed the listening socket: the port is free for a restart while old workers drain.
3. A worker signals only its own supervisor: the PID that spawned it, and only while that
   is still its parent (an orphan's parent is init or a subreaper, never to be signalled).
4. No signal is lost to a worker still starting. Workers ignore SIGINT, SIGTERM, SIGUSR1 and
   SIGUSR2 from birth (ignored dispositions survive ``exec``) until they listen for them,
   and the supervisor records the stage in shared memory before it signals; a worker reads
   it once it listens.

The exit code is 0 when every worker exited 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import trio

from gateway.config import Config

log = logging.getLogger("arouter.workers")

DRAIN, NOW = signal.SIGUSR1, signal.SIGUSR2
SERVING, DRAINING, ENDING = 0, 1, 2  # the stage, shared with the workers


def run(hconfig: Any, workers: int, config: Config, *,
        log_settings: tuple[str, str] = ("INFO", "json"), sockets: Any = None,
        on_bound: Callable[[], None] = lambda: None) -> int:
    """Serve ``config`` with N workers, each logging as ``log_settings`` (level, format)
    says. ``sockets`` are listening sockets (else bound here from ``hconfig``); ``on_bound``
    runs once they listen (connections queue until a worker accepts)."""
    context = multiprocessing.get_context("spawn")
    if sockets is None:
        sockets = hconfig.create_sockets()
        for sock in sockets.insecure_sockets:
            # Listening now, not when a worker gets there: connections queue in the backlog
            # meanwhile instead of being refused.
            sock.listen(hconfig.backlog)
    on_bound()
    stage = context.Value("i", SERVING, lock=False)
    handled = (signal.SIGINT, signal.SIGTERM, DRAIN, NOW)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in handled}  # rule 4
    processes = [
        context.Process(target=_worker, kwargs={
            "hconfig": hconfig, "sockets": sockets, "supervisor": os.getpid(),
            "stage": stage, "config": config, "log_settings": log_settings})
        for _ in range(workers)
    ]
    wakeup, wakeup_writer = socket.socketpair()
    previous_wakeup: int | None = None
    try:
        for process in processes:
            process.start()
        for sock in (wakeup, wakeup_writer):
            sock.setblocking(False)
        # Rule 1. The handlers do nothing: the signal number the C-level handler writes to
        # the wakeup socket is the record, read below.
        previous_wakeup = signal.set_wakeup_fd(wakeup_writer.fileno(),
                                               warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM, DRAIN):
            signal.signal(signum, _noted)
        while alive := [p for p in processes if p.is_alive()]:
            # One list for the test and the wait: a worker that exits in between is still
            # waited for (its sentinel is readable), never dropped from a wait with no end.
            multiprocessing.connection.wait([wakeup, *(p.sentinel for p in alive)])
            received = _drain_wakeups(wakeup)
            wanted = stage.value
            if received:
                # SIGUSR1 comes from a worker that was signalled directly: drain, but never
                # escalate.
                escalations = sum(1 for signum in received if signum != DRAIN)
                wanted = min(ENDING, max(stage.value + escalations, DRAINING))
            elif stage.value == SERVING and any(p.exitcode is not None for p in processes):
                log.error("a worker exited; stopping the others")
                wanted = DRAINING
            if wanted > stage.value:
                _announce(stage.value, wanted, config)
                if stage.value == SERVING:
                    # The kernel keeps accepting while any process holds the listening
                    # socket: ours goes now, the workers' as they begin to drain.
                    _close(sockets)
                for step in range(stage.value + 1, wanted + 1):
                    stage.value = step  # before the signal (rule 4)
                    _tell(processes, DRAIN if step == DRAINING else NOW)
    finally:
        if previous_wakeup is not None:
            signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        wakeup.close()
        wakeup_writer.close()
        # Normally every worker has exited by now. If this loop failed instead, stop the
        # ones that run: drain, a bounded wait, then SIGKILL; none outlives its supervisor.
        stage.value = max(stage.value, DRAINING)
        _tell(processes, DRAIN)
        for process in processes:
            if process.pid is not None:
                process.join(timeout=hconfig.graceful_timeout + 5)
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        _close(sockets)
    codes = [p.exitcode for p in processes]
    if any(code != 0 for code in codes):
        log.error("workers exited with %s", codes)
        return 1
    return 0


def _announce(current: int, wanted: int, config: Config) -> None:
    """Say on the log (the terminal, under Ctrl-C) what this stage does and what the next
    signal would do."""
    if current == SERVING:
        log.warning("stopping: new requests are refused, open ones may run until the drain "
                    "deadline; a second Ctrl-C (SIGINT or SIGTERM) ends them now",
                    extra={"drain_seconds": config.deadlines.drain})
    if wanted >= ENDING:
        log.warning("ending open requests now: each gets its terminal event and its ledger "
                    "row")


def _noted(signum: int, frame: Any) -> None:
    """A Python-level handler must exist for the wakeup socket to hear the signal."""


def _drain_wakeups(wakeup: socket.socket) -> list[int]:
    received: list[int] = []
    while True:
        try:
            data = wakeup.recv(4096)
        except BlockingIOError:
            return received
        received += list(data)


def _tell(processes: list[Any], signum: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signum)  # our own child, by its PID
            except ProcessLookupError:
                pass


def _close(sockets: Any) -> None:
    for sock in sockets.insecure_sockets:
        sock.close()


# -- the worker process -------------------------------------------------------------------


def _worker(hconfig: Any, sockets: Any, supervisor: int, stage: Any, config: Config,
            log_settings: tuple[str, str]) -> None:
    """A worker's main: the supervisor's config, served on the supervisor's sockets until
    the supervisor says stop, or is gone."""
    from gateway.app import create_app
    from gateway.observe import logs
    from gateway.serve.server import tune_gc

    logs.configure(*log_settings)
    app = create_app(config)
    tune_gc()
    trio.run(_serve_worker, app, hconfig, sockets, supervisor, stage)


async def _serve_worker(app: Any, hconfig: Any, sockets: Any, supervisor: int,
                        stage: Any) -> None:
    from gateway.serve.server import serve

    gateway = app.gateway
    stop = trio.Event()

    def stopping(now: bool = False) -> None:
        stop.set()  # the server stops accepting and closes idle connections
        # Once serving, the drain begins here rather than on the serving loop's next turn,
        # so that "now" can follow it at once. (Before, nothing can be open: the loop
        # drains as soon as it has started.)
        if gateway.ready or gateway.draining:
            if now:
                gateway.drain_now()
            else:
                gateway.begin_drain()

    async with trio.open_nursery() as nursery:
        await nursery.start(_signals, stopping, supervisor, stage)
        nursery.start_soon(_watch_supervisor, stopping)
        await serve(app, gateway.config, shutdown_trigger=stop.wait, hconfig=hconfig,
                    sockets=sockets)
        nursery.cancel_scope.cancel("served and settled")  # stop listening for signals


async def _signals(stopping: Callable[[bool], None], supervisor: int, stage: Any, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """SIGUSR1 (from the supervisor) drains, SIGUSR2 ends the drain at once. SIGTERM or
    SIGINT sent to this worker directly drain it and tell the supervisor, which drains
    the others; only the supervisor escalates, unless it is gone: then a second direct
    signal ends the drain at once."""
    wanted = (DRAIN, NOW, signal.SIGTERM, signal.SIGINT)
    with trio.open_signal_receiver(*wanted) as signals:
        task_status.started()
        stopped = stage.value >= DRAINING  # signalled while starting, when signals were ignored
        if stopped:
            stopping(stage.value >= ENDING)
        async for signum in signals:
            direct = signum not in (DRAIN, NOW)
            orphaned = os.getppid() != supervisor
            if direct and not orphaned and not stopped:
                os.kill(supervisor, DRAIN)  # rule 3: our supervisor, still our parent
            now = signum == NOW or (direct and orphaned and stopped)
            stopped = True
            stopping(now)


async def _watch_supervisor(stopping: Callable[[bool], None]) -> None:
    """Rule 2: the pipe from the supervisor reads as closed once it is gone."""
    parent = multiprocessing.parent_process()
    assert parent is not None, "a worker is spawned by its supervisor"
    await trio.lowlevel.wait_readable(parent.sentinel)
    log.error("the supervisor is gone: draining, then exiting")
    stopping(False)
