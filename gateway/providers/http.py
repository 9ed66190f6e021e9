"""The upstream HTTP machinery: shared httpx clients and the one map from httpx errors.

Rules:
- Clients are opened and closed with the app, never per request. Several are used in turn
  because httpcore's pool scans every pooled connection per request (O(n^2) under load,
  DESIGN.md); each one stays small.
- No read timeout: silence between chunks is the relay's idle deadline (a cancel scope),
  which a slow drip cannot defeat. Connect and pool waits are bounded here.
- ``trust_env=False``: proxy and CA environment variables cannot redirect upstream traffic.
  Redirects are never followed.
- ``upstream_errors`` is the only place httpx exceptions become ``GatewayError``s. Messages
  are generic: httpx's own text may carry URLs, and some providers put keys in URLs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from gateway.config import Deadlines
from gateway.errors import (
    NoProviderAvailable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)


class ClientPool:
    def __init__(self, deadlines: Deadlines, count: int = 8) -> None:
        timeout = httpx.Timeout(
            connect=deadlines.connect, read=None, write=deadlines.connect, pool=deadlines.connect
        )
        # keepalive_expiry stays below the usual upstream idle close (OpenAI ~60 s, uvicorn 5 s
        # is the outlier; 4 s keeps us clear of racing a server-side close).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64,
                              keepalive_expiry=4.0)
        self._clients = [
            httpx.AsyncClient(
                timeout=timeout, limits=limits, trust_env=False, follow_redirects=False
            )
            for _ in range(max(1, count))
        ]
        self._next = itertools.cycle(self._clients)

    def get(self) -> httpx.AsyncClient:
        return next(self._next)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@contextmanager
def upstream_errors() -> Iterator[None]:
    """Map httpx exceptions raised inside the block into the gateway's error tree."""
    try:
        yield
    except httpx.PoolTimeout:
        raise NoProviderAvailable("no upstream connection available") from None
    except httpx.ConnectTimeout:
        raise UpstreamTimeout("upstream connect timed out", deadline="connect") from None
    except httpx.ConnectError:
        raise UpstreamConnectError("could not connect to the upstream") from None
    except httpx.TimeoutException:
        raise UpstreamTimeout("upstream timed out", deadline="read") from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        raise UpstreamProtocolError("upstream connection closed unexpectedly") from None
    except httpx.HTTPError:
        raise UpstreamProtocolError("upstream request failed") from None
