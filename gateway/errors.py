"""The gateway's one error tree.

Every failure the gateway reports is a ``GatewayError``. Foreign exceptions (sqlite3,
psycopg, redis, httptools, ssl and socket errors, json) are mapped into this tree at exactly
one place per library boundary, so code above those boundaries never catches a foreign type.
Each class carries the HTTP status it implies *before* the commit point (``status``), a
stable machine-readable ``type``, and whether a different deployment might succeed
(``retryable``). After the commit point the same
error is rendered as the dialect's mid-stream error event instead.

    GatewayError
    ├── RequestError                400  the client's request is wrong
    │   ├── UnsupportedMediaType    415
    │   ├── BodyTooLarge            413
    │   ├── RequestTimeout          408  the body did not arrive in time
    │   └── ModelNotFound           400  "Invalid model specified"
    ├── NotFound                    404  no such route
    ├── MethodNotAllowed            405
    ├── AuthenticationError         401  uniform body, never echoes the key
    ├── PermissionDenied            403  the key may not do this (model allowlist, admin)
    │   └── UnpricedModel           403  a metered key, a model nobody priced
    ├── InsufficientCredits         402
    ├── RateLimited                 429  carries retry_after
    ├── UpstreamError               502  the provider failed us
    │   ├── UpstreamConnectError    502  connect refused / reset / TLS
    │   ├── UpstreamStatusError     502  non-2xx before the first byte (429/503 kept)
    │   ├── UpstreamProtocolError   502  garbage, truncation, bad JSON
    │   ├── UpstreamTimeout         504  a named deadline passed
    │   └── OutputLimitExceeded     502  more output than the request's cap
    ├── NoProviderAvailable         503  every deployment failed or is cooling down
    ├── ShuttingDown                503  draining on SIGTERM
    ├── StoreUnavailable            503  the store cannot answer (credits fail closed)
    ├── NotMetered                  409  a top-up of a key without a balance limit
    ├── LimiterUnavailable          503  the rate limiter's backend cannot answer
    └── InternalError               500  generic body, details only in logs

A client that goes away is not an error of this tree: it is an outcome (``client_abort``).
"""

from __future__ import annotations

from gateway.observe.redact import redact


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    retryable: bool = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        message = redact(message)  # a client's key may be what the message echoes
        super().__init__(message)
        self.message = message
        self.param = None if param is None else redact(param)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class RequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedMediaType(RequestError):
    status = 415


class BodyTooLarge(RequestError):
    status = 413


class RequestTimeout(RequestError):
    status = 408
    type = "request_timeout"


class ModelNotFound(RequestError):
    def __init__(self, message: str = "Invalid model specified") -> None:
        super().__init__(message, param="model")


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"

    def __init__(self, message: str = "Invalid API key") -> None:
        super().__init__(message)


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"


class UnpricedModel(PermissionDenied):
    """A key with a balance asked for a model that has no price: the gateway could not bill
    it, so it refuses rather than serve it free (an operator sets a price, or ``free``)."""

    def __init__(self, model: str, deployments: list[str]) -> None:
        names = ", ".join(deployments)
        super().__init__(
            f"the model {model!r} has no price ({names}), and this key pays from a balance: "
            "it cannot be billed, so it is refused. An operator can set its price "
            '([providers.NAME.prices."MODEL"] prompt/completion, dollars per million tokens) '
            "or mark it free (free = true).", param="model")


class InsufficientCredits(GatewayError):
    status = 402
    type = "insufficient_credits"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    retryable = True


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamStatusError(UpstreamError):
    def __init__(
        self, message: str, *, upstream_status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        # The client hears the provider's overload as overload, anything else as a bad gateway.
        if upstream_status == 429:
            self.status, self.type = 429, "rate_limit_error"
        elif upstream_status in (503, 529):
            self.status, self.type = 503, "service_unavailable"
        # A provider refusing our own credentials or the request's content will refuse
        # again on retry; overload and server faults may not.
        self.retryable = upstream_status in (408, 409, 429, 500, 502, 503, 504, 529)


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"

    def __init__(self, message: str, *, deadline: str) -> None:
        super().__init__(message)
        self.deadline = deadline


class OutputLimitExceeded(UpstreamError):
    """The upstream kept producing past the request's output cap (it ignored max_tokens)."""

    type = "output_limit"
    retryable = False

    def __init__(self, message: str = "the upstream exceeded the output token cap") -> None:
        super().__init__(message)


class NoProviderAvailable(GatewayError):
    status = 503
    type = "service_unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(GatewayError):
    """The gateway is draining: no new requests; open ones end at the drain deadline."""

    status = 503
    type = "service_unavailable"
    retryable = True


class InternalError(GatewayError):
    status = 500
    type = "server_error"

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)


class StoreUnavailable(GatewayError):
    """The store cannot be reached or failed: credits fail closed, with a fast 503."""

    status = 503
    type = "service_unavailable"
    retryable = True
    retry_after = 1.0  # seconds a client should wait (a store outage is usually brief)


class NotMetered(GatewayError):
    """A top-up of a key that has no balance limit."""

    status = 409
    type = "invalid_request_error"


class LimiterUnavailable(GatewayError):
    """The rate limiter's backend (Redis) cannot answer; ``FallbackLimiter`` limits locally
    instead."""

    status = 503
    type = "service_unavailable"
    retryable = True
