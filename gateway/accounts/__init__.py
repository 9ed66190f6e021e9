"""Accounts: who may spend what, and what each request did spend.

``admission`` admits a request against its key (allowlist, limits, a credit reservation)
and settles it once; ``ledger`` group-commits those rows; ``outbox`` keeps the rows the
store refused; ``liveness`` settles what dead processes left open; ``keys``, ``policy``,
``pricing`` and ``price_table`` are pure. Rule: money is integer micro-dollars everywhere,
and every admitted request ends in exactly one settlement.
"""
