"""Routing decisions, pure: model names to deployments, circuits, and which one next.

Nothing here does I/O; the relay's ``attempts`` acts on these decisions.
"""
