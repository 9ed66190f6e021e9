"""The upstream client over TLS: verification before any request byte (FAULTS S15, C17).

Certificates come from ``trustme`` (a throwaway CA); the client's default context trusts
only the public CAs, so the test server's certificate is as good as self-signed to it.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trustme

from gateway.config import Deadlines, ProviderConfig
from gateway.errors import UpstreamConnectError, UpstreamTimeout
from gateway.providers.http import ClientPool
from gateway.serve.server import running
from tests.support.gateways import add_key, make_config
from tests.support.loopback import CHUNKED, CHUNKED_BODY, LENGTH, fetch, reply, serve

CA = trustme.CA


@pytest.fixture(scope="module")
def ca() -> CA:
    return trustme.CA()


def server_context(ca: CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


async def test_tls_untrusted_certificate_is_refused_before_any_request_byte(
    nursery: trio.Nursery, pool: ClientPool, ca: CA
) -> None:
    """S15 / C17: a self-signed upstream gets no request, so never the provider key."""
    server = await serve(nursery, reply(LENGTH), tls=server_context(ca, "127.0.0.1"))
    url = server.url.replace("http://", "https://")
    with pytest.raises(UpstreamConnectError, match="TLS"):
        async with pool.stream("POST", url, {"authorization": "Bearer sk-CANARY"}, b"{}"):
            pass
    await server.wait_closed(0)
    conn = server.connections[0]
    assert conn.handshake_failed and conn.requests == 0 and not conn.received


async def test_tls_hostname_mismatch_is_refused(nursery: trio.Nursery, ca: CA) -> None:
    server = await serve(nursery, reply(LENGTH), tls=server_context(ca, "other.example"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    clients = ClientPool(Deadlines(), ssl_context=client_context)
    try:
        with pytest.raises(UpstreamConnectError, match="TLS"):
            await fetch(clients, server.url.replace("http://", "https://"))
    finally:
        await clients.aclose()
    await server.wait_closed(0)
    assert server.connections[0].requests == 0


async def test_tls_trusted_server_streams_and_reuses(nursery: trio.Nursery,
                                                     ca: CA) -> None:
    server = await serve(nursery, reply(CHUNKED[:30], CHUNKED[30:], requests=2),
                         tls=server_context(ca, "localhost"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    clients = ClientPool(Deadlines(), ssl_context=client_context)
    url = f"https://localhost:{server.port}/v1/x"
    try:
        assert await fetch(clients, url) == (200, CHUNKED_BODY)
        assert await fetch(clients, url) == (200, CHUNKED_BODY)
    finally:
        await clients.aclose()
    assert len(server.connections) == 1 and server.connections[0].requests == 2


async def test_tls_handshake_that_never_ends_hits_the_connect_deadline(
    nursery: trio.Nursery,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    clients = ClientPool(Deadlines(connect=0.1))
    try:
        with trio.fail_after(1), pytest.raises(UpstreamTimeout) as info:
            await fetch(clients, f"https://127.0.0.1:{port}/")
    finally:
        await clients.aclose()
    assert info.value.deadline == "connect"


async def test_gateway_answers_502_and_the_self_signed_upstream_never_sees_the_key(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca: CA
) -> None:
    """S15 / C17 through the real stack: client -> gateway -> TLS upstream it cannot trust."""
    monkeypatch.setenv("AROUTER_TEST_TLS_KEY", "sk-CANARY-tls-0123456789")
    server = await serve(nursery, reply(LENGTH), tls=server_context(ca, "127.0.0.1"))
    config = make_config(tmp_path, None)
    tls = ProviderConfig(name="tls", dialect="openai", api_key_env="AROUTER_TEST_TLS_KEY",
                         base_url=f"https://127.0.0.1:{server.port}/v1")
    config = attrs.evolve(config, providers={**config.providers, "tls": tls})
    key = await add_key(config)
    body = {"model": "tls/any", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with running(config) as run, httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{run.url}/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "upstream TLS handshake failed"
    assert "CANARY" not in response.text
    await server.wait_closed(0)
    assert server.connections[0].handshake_failed
    assert not server.connections[0].received
