"""The fleet limiter: rate limits shared through one Redis, decided in each process.

A process takes a *quota* of a key's shared limits from Redis (some request tokens of the
rpm bucket, some tokens of the tpm bucket, some concurrency slots) and admits that key's
requests against it in memory; a background ``sync`` gives back what went unused and
takes a fresh quota sized to what the key used, off the request path. So a busy key
costs no Redis round trip per request, only one per key per ``sync_interval``.

Rules (the semantics of ``base.py``, with these bounds):
- **Never more than the limit.** A quota comes out of the shared bucket or slot set in one
  atomic script (``_TAKE``), so all processes together hold no more than the limit allows.
  A quota is at most what a key wants (a twentieth of its limit, or what it used in the
  last interval, twice over) and at most a quarter of what is left, unless the waiting
  request needs it: near its limit, a key is admitted exactly, one request per take.
- **The error bound is on the other side.** Quota one process holds unused is not there
  for another until the holder's next sync (at most ``sync_interval`` seconds): a request
  may be refused (429) while up to that much of the limit sits idle in other processes.
  tpm is the one exception that can run over: a request's real token count beyond its
  estimate goes into the process's debt at once and reaches the shared bucket at the
  next sync, so the fleet may overrun tpm by what its requests underestimated within one
  interval (a single process's bucket goes into debt the same way, only at once).
- Slots are members of a sorted set (``<instance>#<n>``) that expire ``slot_ttl`` after
  their holder's last sync: a process that dies frees its slots within that by itself,
  and at once when reconciliation finds it (``forget_instances``).
- ``release`` is local and synchronous: no I/O, so it never fails and never waits.
- The Redis plumbing (threads, timeouts, errors as ``LimiterUnavailable``) is
  ``RedisLimiter``'s; a take that cannot reach Redis raises it, and ``FallbackLimiter``
  limits locally meanwhile. Quota in hand is still used while Redis is away.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio
from redis.commands.core import Script

from gateway.errors import GatewayError
from gateway.limits.base import WINDOW, Held, Limits
from gateway.limits.local import refused
from gateway.limits.redis import _PRELUDE, RedisLimiter, _opt

log = logging.getLogger("arouter.limits")

SHARE = 4  # a quota takes at most 1/SHARE of what is left, unless a request needs more
CHUNK = 20  # and wants at most 1/CHUNK of the limit, unless the key used more

# KEYS: rpm bucket, tpm bucket, slots. ARGV: now, window, rpm, tpm, concurrent ('' = no
# such limit), then for rpm, tpm and slots each: want, least (a need: refuse below it),
# then the instance, the first slot number, the slots' expiry, the share; then what is
# given back: rpm, tpm (negative: a debt), slot members to drop, then slot members to
# keep (renewed), each list preceded by its length.
# Returns {1, rpm granted, tpm granted, slots granted}, or {0, name, wait, ...} having
# changed nothing.
_SYNC = _PRELUDE + """
local rpm, tpm, concurrent = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local want_r, least_r = tonumber(ARGV[6]), tonumber(ARGV[7])
local want_t, least_t = tonumber(ARGV[8]), tonumber(ARGV[9])
local want_s, least_s = tonumber(ARGV[10]), tonumber(ARGV[11])
local instance, first, expiry, share = ARGV[12], tonumber(ARGV[13]), ARGV[14], tonumber(ARGV[15])
local back_r, back_t = tonumber(ARGV[16]), tonumber(ARGV[17])
local at = 18
local drop = {}
for i = 1, tonumber(ARGV[at]) do table.insert(drop, ARGV[at + i]) end
at = at + #drop + 1
local keep = {}
for i = 1, tonumber(ARGV[at]) do table.insert(keep, ARGV[at + i]) end

local function wait(lvl, capacity, need)
  if capacity <= 0 then return window end
  return math.max(0, (need - lvl) * window / capacity)
end
local function grant(have, want, least)
  return math.min(want, math.max(least, have / share))
end

-- What there is once this process's own unused quota is back: a refusal changes nothing
-- (the quota in hand stays in hand); an admission gives it back and takes anew.
local r_level, t_level
if rpm then r_level = math.min(rpm, level(KEYS[1], rpm) + back_r) end
if tpm then t_level = math.min(tpm, level(KEYS[2], tpm) + back_t) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
local held = redis.call('ZCARD', KEYS[3])
for _, member in ipairs(drop) do
  if redis.call('ZSCORE', KEYS[3], member) then held = held - 1 end
end

local refused = {0}
if rpm and least_r > 0 and r_level < least_r then
  table.insert(refused, 'rpm'); table.insert(refused, fmt(wait(r_level, rpm, least_r)))
end
if tpm and least_t > 0 and t_level < least_t then
  table.insert(refused, 'tpm'); table.insert(refused, fmt(wait(t_level, tpm, least_t)))
end
if concurrent and least_s > 0 and concurrent - held < least_s then
  table.insert(refused, 'concurrent'); table.insert(refused, '0')
end
if #refused > 1 then return refused end

for _, member in ipairs(drop) do redis.call('ZREM', KEYS[3], member) end
for _, member in ipairs(keep) do redis.call('ZADD', KEYS[3], 'XX', expiry, member) end
local g_r, g_t, g_s = 0, 0, 0
if rpm then
  if r_level > 0 then g_r = grant(r_level, want_r, least_r) end
  store(KEYS[1], r_level - g_r, rpm)
end
if tpm then
  if t_level > 0 then g_t = grant(t_level, want_t, least_t) end
  store(KEYS[2], t_level - g_t, tpm)
end
if concurrent then
  g_s = math.max(0, math.floor(grant(concurrent - held, want_s, least_s)))
  for i = 0, g_s - 1 do
    redis.call('ZADD', KEYS[3], expiry, instance .. '#' .. (first + i))
  end
  redis.call('PEXPIRE', KEYS[3], math.ceil((tonumber(expiry) - now) * 1000) + 1000)
end
return {1, fmt(g_r), fmt(g_t), g_s}
"""


# KEYS: slots. ARGV: an instance's member prefix. Removes that instance's members.
_FORGET = """
local n = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then
    redis.call('ZREM', KEYS[1], member); n = n + 1
  end
end
return n
"""


@attrs.define(eq=False)
class _Quota:
    """One key's quota in this process."""

    limits: Limits
    rpm: float = 0.0  # request tokens in hand
    tpm: float = 0.0  # tokens in hand (negative: a debt the next sync pays)
    free: list[str] = attrs.Factory(list)  # slots held in Redis, not in use
    busy: dict[str, str] = attrs.Factory(dict)  # generation id -> its slot
    used_rpm: float = 0.0  # since the last sync: what the next quota is sized by
    used_tpm: float = 0.0
    used_slots: int = 0
    short: bool = False  # the last take got less than it wanted: the limit is near
    lock: trio.Lock = attrs.Factory(trio.Lock)

    def fits(self, tokens: int) -> bool:
        limits = self.limits
        return ((limits.rpm is None or self.rpm >= 1)
                and (limits.tpm is None or self.tpm >= 1)
                and (limits.concurrent is None or bool(self.free)))


class QuotaLimiter:
    def __init__(
        self, redis_limiter: RedisLimiter, *, instance: str = "", sync_interval: float = 0.25,
        slot_ttl: float = 5.0, clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_limiter
        self._sync: Script = redis_limiter.client.register_script(_SYNC)
        self._forget: Script = redis_limiter.client.register_script(_FORGET)
        self.sync_interval = sync_interval
        self.slot_ttl = slot_ttl
        self._clock = clock
        # Slots are named for the gateway instance (``Instance.id``) that holds them, so a
        # reconciler can free a dead one's at once (``forget_instances``).
        self._instance = instance or secrets.token_hex(8)
        self._next_slot = 0
        self._quotas: dict[str, _Quota] = {}
        self._urgent: set[str] = set()  # keys near their limit with a slot to give back
        self._wake = trio.Event()
        self.calls = 0  # script calls made: what the tests count

    async def acquire(
        self, key_id: str, limits: Limits, generation_id: str, tokens: int, slot_ttl: float
    ) -> None:
        await trio.lowlevel.checkpoint()
        if limits.none:
            return
        quota = self._quotas.get(key_id)
        if quota is None or quota.limits != limits:
            quota = self._quotas.setdefault(key_id, _Quota(limits))
            quota.limits = limits
        for _ in range(3):  # a quota just taken can be used up by others before we run
            if quota.fits(tokens):
                break
            async with quota.lock:
                if not quota.fits(tokens):
                    await self._exchange(key_id, quota, needs=True)
        else:
            raise refused(limits, {"concurrent": 0.0} if limits.concurrent else {"rpm": 1.0})
        quota.rpm -= 1
        quota.used_rpm += 1
        quota.tpm -= max(0, tokens)
        quota.used_tpm += max(0, tokens)
        if limits.concurrent is not None:
            quota.busy[generation_id] = quota.free.pop()
            quota.used_slots = max(quota.used_slots, len(quota.busy))
        else:
            quota.busy[generation_id] = ""

    async def release(
        self, key_id: str, limits: Limits, generation_id: str, extra_tokens: int
    ) -> None:
        quota = self._quotas.get(key_id)
        if quota is None:
            return
        slot = quota.busy.pop(generation_id, None)
        if slot is None:
            return  # released before, or never taken here
        if slot:
            quota.free.append(slot)
            if quota.short:  # near the limit: another process may be waiting for it
                self._urgent.add(key_id)
                self._wake.set()
        quota.tpm -= extra_tokens  # a debt (or a refund) the next sync pays
        quota.used_tpm += extra_tokens

    async def forget(self, held: Sequence[tuple[str, str]]) -> None:
        # Slots are per process here: ``forget_instances``.
        await trio.lowlevel.checkpoint()

    async def forget_instances(self, keys: Mapping[str, Collection[str]]) -> None:
        """Drop every slot a dead process held for these keys, now rather than when they
        expire (``slot_ttl`` after its last sync)."""
        for instance, key_ids in keys.items():
            for key_id in key_ids:
                await self._redis.call(partial(self._forget, keys=[_keys(key_id)[2]],
                                               args=[f"{instance}#"]))

    async def usage(self, key_id: str, limits: Limits) -> Held:
        fleet = await self._redis.usage(key_id, limits, _keys(key_id))
        quota = self._quotas.get(key_id)
        if quota is None:
            return fleet
        held_here = len(quota.free)  # slots taken but unused: not in use by anyone
        return Held(
            concurrent=max(0, fleet.concurrent - held_here),
            rpm_left=None if fleet.rpm_left is None else fleet.rpm_left + max(0.0, quota.rpm),
            tpm_left=None if fleet.tpm_left is None else fleet.tpm_left + quota.tpm,
        )

    async def run(self) -> None:
        """Sync every quota each ``sync_interval`` seconds, for the life of the process."""
        while True:
            with trio.move_on_after(self.sync_interval):
                await self._wake.wait()  # a key near its limit freed a slot: at once
            self._wake = trio.Event()
            urgent, self._urgent = self._urgent, set()
            due = self._quotas.items() if not urgent else [
                (key_id, self._quotas[key_id]) for key_id in urgent if key_id in self._quotas]
            for key_id, quota in list(due):
                try:
                    async with quota.lock:
                        await self._exchange(key_id, quota, needs=False)
                except GatewayError:
                    log.debug("could not sync a rate-limit quota", extra={"key_id": key_id})
                if not quota.busy and not quota.free and quota.rpm == quota.tpm == 0:
                    self._quotas.pop(key_id, None)

    async def aclose(self) -> None:
        """Give every quota back (best effort: what is not returned refills anyway)."""
        for key_id, quota in list(self._quotas.items()):
            quota.busy.clear()
            quota.used_rpm = quota.used_tpm = quota.used_slots = 0
            try:
                await self._exchange(key_id, quota, needs=False)
            except GatewayError:
                pass
        self._quotas.clear()
        await self._redis.aclose()

    async def _exchange(self, key_id: str, quota: _Quota, *, needs: bool) -> None:
        """One script call: give back what is in hand and unused, renew the slots in use,
        and take a fresh quota (with ``needs``: at least what one request needs, or
        ``RateLimited``). A key that used nothing since the last sync takes nothing."""
        limits = quota.limits
        active = needs or quota.busy or quota.used_rpm
        want_r = max(1.0, (limits.rpm or 0) / CHUNK, 2 * quota.used_rpm) if active else 0.0
        want_t = max(1.0, (limits.tpm or 0) / CHUNK, 2 * quota.used_tpm) if active else 0.0
        want_s = max(1, math.ceil((limits.concurrent or 0) / CHUNK), 2 * quota.used_slots,
                     len(quota.busy) + 1) - len(quota.busy) if active else 0
        first = self._next_slot
        self._next_slot += int(want_s)
        # What is in hand leaves the process's hands before the call, not after: requests
        # admitted meanwhile must not spend what the script is giving back. They find no
        # quota and wait for this call (the lock); a release meanwhile adds its debt.
        drop, back_r, back_t = quota.free, quota.rpm, quota.tpm
        quota.free, quota.rpm, quota.tpm = [], 0.0, 0.0
        used = quota.used_rpm, quota.used_tpm, quota.used_slots
        quota.used_rpm = quota.used_tpm = 0.0
        quota.used_slots = len(quota.busy)
        keep = [slot for slot in quota.busy.values() if slot]
        now = self._clock()
        args: list[Any] = [
            now, WINDOW, _opt(limits.rpm), _opt(limits.tpm), _opt(limits.concurrent),
            want_r, 1 if needs and limits.rpm is not None else 0,
            want_t, 1 if needs and limits.tpm is not None else 0,
            want_s, 1 if needs and limits.concurrent is not None else 0,
            self._instance, first, repr(now + self.slot_ttl), SHARE,
            back_r, back_t, len(drop), *drop, len(keep), *keep,
        ]
        self.calls += 1
        try:
            answer = await self._redis.call(partial(self._sync, keys=list(_keys(key_id)),
                                                    args=args))
            if int(answer[0]) == 0:  # refused: the script changed nothing
                pairs = iter(answer[1:])
                raise refused(limits, {name.decode(): float(wait)
                                       for name, wait in zip(pairs, pairs, strict=True)})
        except BaseException:  # still ours: back into the process's hands
            quota.free.extend(drop)
            quota.rpm += back_r
            quota.tpm += back_t
            quota.used_rpm += used[0]
            quota.used_tpm += used[1]
            quota.used_slots = max(quota.used_slots, used[2])
            raise
        # What was in hand went back in the same script; this is the new quota.
        granted_r, granted_t = float(answer[1]), float(answer[2])
        quota.rpm += granted_r
        quota.tpm += granted_t
        quota.free.extend(f"{self._instance}#{first + i}" for i in range(int(answer[3])))
        quota.short = (granted_r < want_r or granted_t < want_t
                       or (limits.concurrent is not None and int(answer[3]) < want_s))


def _keys(key_id: str) -> tuple[str, str, str]:
    # One hash tag per API key keeps a script's keys on one slot of a Redis Cluster.
    base = f"arouter:quota:{{{key_id}}}"
    return f"{base}:rpm", f"{base}:tpm", f"{base}:slots"

