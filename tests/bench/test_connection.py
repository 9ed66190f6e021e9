"""The bench's TCP connection on Trio's I/O waits, against plain loopback sockets."""

from __future__ import annotations

import socket

import pytest
import trio

from gateway.bench.connection import Connection, resolve


async def _listener() -> tuple[trio.socket.SocketType, int]:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


async def test_send_receive_eof_and_close() -> None:
    listener, port = await _listener()
    with listener:
        family, address = await resolve("localhost", port)
        assert (family, address) in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
        conn = await Connection.open(socket.AF_INET, "127.0.0.1", port)
        peer, _ = await listener.accept()
        with peer:
            big = b"x" * (8 * 1024 * 1024)  # far beyond the socket buffers: waits for room
            received = bytearray()

            async def drain() -> None:
                while len(received) < len(big):
                    received.extend(await peer.recv(1 << 20))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await conn.send_all(big)
            assert received == big
            await peer.send(b"hello")
            assert await conn.receive() == b"hello"
        assert await conn.receive() == b""  # the peer closed
        conn.close()
        conn.close()  # harmless
        assert conn.closed


async def test_close_interrupts_a_waiting_receive() -> None:
    listener, port = await _listener()
    with listener:
        conn = await Connection.open(socket.AF_INET, "127.0.0.1", port)
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.02)
                conn.close()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await conn.receive()


async def test_refused_connect_raises_and_leaks_nothing() -> None:
    listener, port = await _listener()
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        await Connection.open(socket.AF_INET, "127.0.0.1", port)


async def test_a_cancelled_connect_closes_its_socket() -> None:
    # Cancelled at the connect's checkpoint, the socket must be closed: a leaked one would
    # raise a ResourceWarning, an error in this suite.
    listener, port = await _listener()
    with listener, trio.CancelScope() as scope:
        scope.cancel()
        await Connection.open(socket.AF_INET, "127.0.0.1", port)
    assert scope.cancelled_caught
