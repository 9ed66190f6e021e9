"""The HTTP side: ASGI routes, from a request's head to the relay and back.

``dispatch`` sends generation paths to ``generation`` (raw ASGI, one per client dialect
in ``dialects``) and the rest to the quart-trio app (``routes``, ``admin``). Rule: this
package speaks to the gateway process only through the ``service.Service`` protocol.
"""
