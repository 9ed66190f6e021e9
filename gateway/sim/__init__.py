"""The fake upstream (``arouter sim``) and what it shares with the built-in simulator.

``scenarios`` is pure (the scenario table, the ``#sim`` directive, token texts) and is what
the gateway's simulator provider imports. ``server`` serves it over real HTTP/1.1 for tests
and the load tester: ``play`` plays one request's scenario the same way whatever its
dialect, and ``openai``, ``anthropic`` and ``gemini`` render it in their API's shape through
the contract in ``dialect``. Nothing is re-exported here, so importing the pure part never
pulls in the server's I/O stack.
"""
