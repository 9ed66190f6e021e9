"""Rate limits: the contract (base.py), in-process and Redis-backed limiters."""
