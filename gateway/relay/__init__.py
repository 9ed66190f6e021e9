"""The relay: one generation request in one Trio nursery, from its first byte to its last.

``nursery`` runs the sibling tasks (upstream reader, keepalive ticker, disconnect watcher)
around the ``exchange`` they share; ``attempts`` chooses, retries and hedges deployments
until the first token; ``transcript`` accumulates what the answer said. Rule: cancelling
any task tears the whole group down, and the upstream stops with it.
"""
