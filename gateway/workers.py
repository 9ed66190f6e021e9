"""``arouter serve --workers N``: hypercorn's trio workers, supervised by the gateway.

The parent binds the listening sockets (hypercorn's ``Config.create_sockets``) and spawns N
processes running hypercorn's own worker (``hypercorn.trio.trio_worker``) on them, exactly as
``hypercorn.run`` does; the kernel spreads connections among them. What differs is who owns
the signals. ``hypercorn.run`` only sets a shared shutdown event: workers stop accepting and
cut whatever is open at the graceful timeout, with no terminal event and no drain. Here:

    first SIGTERM/SIGINT    the shutdown event (workers stop accepting) and SIGUSR1 to each
                            worker: its gateway drains (``Gateway.begin_drain``)
    second                  SIGUSR2 to each worker: end open streams now (each still gets
                            its terminal event and ledger row)
    a worker dies           the others drain and stop, as hypercorn does
    SIGUSR1 from a worker   it was signalled directly: drain them all (never escalates)

Workers ignore SIGINT, SIGUSR1 and SIGUSR2 from birth (dispositions set to ignore survive
``exec``) until their lifespan listens for them, so a signal during start-up cannot kill one.
The exit code is 0 when every worker exited 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger("arouter.workers")

DRAIN, NOW = signal.SIGUSR1, signal.SIGUSR2


def run(hconfig: Any, workers: int, on_bound: Callable[[], None] = lambda: None) -> int:
    """Serve ``hconfig`` (whose ``application_path`` the workers load) with N workers;
    ``on_bound`` runs once the socket listens (connections queue until a worker accepts)."""
    from hypercorn.trio.run import trio_worker

    context = multiprocessing.get_context("spawn")
    sockets = hconfig.create_sockets()
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        # Listening now, not when a worker gets there: connections queue in the backlog
        # meanwhile instead of being refused. (Each worker's listen() again is harmless.)
        sock.listen(hconfig.backlog)
    on_bound()
    shutdown = context.Event()
    received: list[int] = []
    previous = {s: signal.signal(s, signal.SIG_IGN)
                for s in (signal.SIGINT, signal.SIGTERM, DRAIN, NOW)}
    processes = [
        context.Process(target=trio_worker, kwargs={
            "config": hconfig, "sockets": sockets, "shutdown_event": shutdown})
        for _ in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        for signum in (signal.SIGINT, signal.SIGTERM, DRAIN):
            signal.signal(signum, lambda signum, frame: received.append(signum))
        stage = 0  # 0 serving, 1 draining, 2 ending now
        while any(p.is_alive() for p in processes):
            multiprocessing.connection.wait(
                [p.sentinel for p in processes if p.is_alive()], timeout=0.2)
            wanted = stage
            if received:
                count = len(received)
                taken = received[:count]
                del received[:count]  # a signal arriving meanwhile stays for the next turn
                # SIGUSR1 comes from a worker that was signalled directly: drain, but never
                # escalate (with systemd's control-group kill every process gets SIGTERM,
                # and each worker reports it).
                escalations = sum(1 for signum in taken if signum != DRAIN)
                wanted = min(2, max(stage + escalations, 1))
            elif stage == 0 and any(p.exitcode is not None for p in processes):
                log.error("a worker exited; stopping the others")
                wanted = 1
            if wanted > stage:
                if stage == 0:
                    shutdown.set()
                    # The kernel keeps accepting while any process holds the listening
                    # socket: ours goes now, the workers' as they stop.
                    _close(sockets)
                for step in range(stage + 1, wanted + 1):
                    _tell(processes, DRAIN if step == 1 else NOW)
                stage = wanted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        # Normally every worker has exited by now. If this loop failed instead, stop the
        # ones that run: drain, a bounded wait, then SIGKILL; none outlives its supervisor.
        shutdown.set()
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


def _tell(processes: list[Any], signum: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signum)  # our own child, by its PID
            except ProcessLookupError:
                pass


def _close(sockets: Any) -> None:
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.close()
