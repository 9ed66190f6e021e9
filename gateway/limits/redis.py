"""The fleet limiter: rate limits shared by every gateway through one Redis.

Rules:
- redis-py's sync client runs in worker threads (``trio.to_thread.run_sync``) under a
  capacity limiter of ``pool_size``, over a pool of at most ``pool_size`` connections. Every
  socket has connect and read timeouts of ``timeout`` and redis-py never retries, so a
  thread never outlives a dead or hung server by more than one timeout.
- ``acquire`` is one Lua script and ``release`` another, each atomic on the server, so two
  gateways racing for a key's last slot or token cannot both win. Scripts are sent by SHA
  (EVALSHA) and loaded again when the server answers NOSCRIPT (a restart, a failover).
- The time is the caller's ``clock()`` (wall-clock time by default, which the fleet shares),
  passed to the scripts as an argument: Redis ``TIME`` would make tests unable to move time.
- Every key carries a TTL a little past the moment its state would be "full bucket / no
  slots" anyway, so keys of idle API keys vanish by themselves.
- Every redis-py (and socket) exception becomes ``LimiterUnavailable`` in ``_run`` and
  nowhere else. Its message names the failure's class only, never the URL or password.
- The bucket arithmetic is ``local.py``'s, transcribed; the contract suite holds both to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import redis
import trio
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from gateway.errors import LimiterUnavailable
from gateway.limits.base import WINDOW, Held, Limits
from gateway.limits.local import refill, refused

T = TypeVar("T")

# Shared by both scripts. Numbers are written with %.17g: Lua's own tostring keeps 14
# digits, which at today's epoch seconds rounds timestamps to a tenth of a millisecond.
_PRELUDE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local function fmt(x)
  return string.format('%.17g', x)
end

local function level(key, capacity)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if not lvl or not ts then
    return capacity
  end
  return math.min(capacity, lvl + math.max(0, now - ts) * capacity / window)
end

-- The TTL outlives the time to refill by a second of slack for clocks that disagree.
local function store(key, lvl, capacity)
  redis.call('HSET', key, 'level', fmt(lvl), 'ts', fmt(now))
  local full_in = 0
  if capacity > 0 then
    full_in = math.max(0, (capacity - lvl) * window / capacity)
  end
  redis.call('PEXPIRE', key, math.ceil(full_in * 1000) + 1000)
end
"""

# KEYS: rpm bucket, tpm bucket, slots (sorted set: generation id scored by expiry).
# ARGV: now, window, rpm, tpm, concurrent ('' = no such limit), tokens, slot ttl, generation.
# Returns {} when admitted, else a flat list of refusing limit names and their waits.
_ACQUIRE = _PRELUDE + """
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local concurrent = tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local slot_ttl = tonumber(ARGV[7])
local generation = ARGV[8]

local function wait(lvl, capacity)
  if capacity <= 0 then
    return window
  end
  return math.max(0, (1 - lvl) * window / capacity)
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
local refused = {}
if concurrent and redis.call('ZCARD', KEYS[3]) >= concurrent then
  table.insert(refused, 'concurrent')
  table.insert(refused, '0')
end
local rpm_level, tpm_level
if rpm then
  rpm_level = level(KEYS[1], rpm)
  if rpm_level < 1 then
    table.insert(refused, 'rpm')
    table.insert(refused, fmt(wait(rpm_level, rpm)))
  end
end
if tpm then
  tpm_level = level(KEYS[2], tpm)
  if tpm_level < 1 then
    table.insert(refused, 'tpm')
    table.insert(refused, fmt(wait(tpm_level, tpm)))
  end
end
if #refused > 0 then
  return refused
end

if rpm then
  store(KEYS[1], rpm_level - 1, rpm)
end
if tpm then
  store(KEYS[2], tpm_level - tokens, tpm)
end
redis.call('ZADD', KEYS[3], fmt(now + slot_ttl), generation)
-- The set lives as long as its longest slot; slot TTLs may differ between requests.
local ttl = math.ceil(slot_ttl * 1000) + 1000
if redis.call('PTTL', KEYS[3]) < ttl then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {}
"""

# KEYS: tpm bucket, slots. ARGV: now, window, tpm ('' = none), extra tokens, generation.
# Returns 1 if a live slot was released, 0 if it was gone (released, expired, never taken).
_RELEASE = _PRELUDE + """
local tpm = tonumber(ARGV[3])
local extra = tonumber(ARGV[4])
local generation = ARGV[5]

local expiry = tonumber(redis.call('ZSCORE', KEYS[2], generation))
if not expiry then
  return 0
end
redis.call('ZREM', KEYS[2], generation)
if expiry <= now then
  return 0
end
if tpm and extra ~= 0 then
  local lvl = level(KEYS[1], tpm) - extra
  if extra < 0 then
    lvl = math.min(lvl, tpm)
  end
  store(KEYS[1], lvl, tpm)
end
return 1
"""


class RedisLimiter:
    def __init__(
        self,
        url: str,
        clock: Callable[[], float] = time.time,
        pool_size: int = 8,
        timeout: float = 0.25,
    ) -> None:
        self._clock = clock
        try:
            self._pool = redis.ConnectionPool.from_url(
                url,
                max_connections=pool_size,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                # The fallback limiter is the retry policy: a retry here only doubles the
                # time a request waits on a dead server.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            raise ValueError(
                "unusable Redis URL: expected redis://host:port/db or unix:///path/to/socket"
            ) from None
        self.client = redis.Redis(connection_pool=self._pool)
        self._threads = trio.CapacityLimiter(pool_size)
        self._acquire: Script = self.client.register_script(_ACQUIRE)
        self._release: Script = self.client.register_script(_RELEASE)

    async def acquire(
        self, key_id: str, limits: Limits, generation_id: str, tokens: int, slot_ttl: float
    ) -> None:
        if limits.none:
            await trio.lowlevel.checkpoint()
            return
        rpm, tpm, slots = _keys(key_id)
        args = (
            self._clock(), WINDOW, _opt(limits.rpm), _opt(limits.tpm), _opt(limits.concurrent),
            max(0, tokens), slot_ttl, generation_id,
        )
        answer = await self.call(partial(self._acquire, keys=[rpm, tpm, slots], args=args))
        if answer:
            pairs = iter(answer)
            raise refused(limits, {name.decode(): float(wait) for name, wait in zip(pairs, pairs,
                                                                                  strict=True)})

    async def release(
        self, key_id: str, limits: Limits, generation_id: str, extra_tokens: int
    ) -> None:
        if limits.none:
            return
        _, tpm, slots = _keys(key_id)
        args = (self._clock(), WINDOW, _opt(limits.tpm), extra_tokens, generation_id)
        # A release usually runs while its request is being torn down, often in a cancelled
        # scope; an unshielded thread call would be cancelled before it ran and leak the slot
        # until its TTL. The timeouts bound the shielded wait.
        with trio.CancelScope(shield=True):
            await self.call(partial(self._release, keys=[tpm, slots], args=args))

    async def forget(self, held: Sequence[tuple[str, str]]) -> None:
        if not held:
            return

        def remove() -> None:
            with self.client.pipeline(transaction=False) as pipe:
                for key_id, generation_id in held:
                    pipe.zrem(_keys(key_id)[2], generation_id)
                pipe.execute()

        with trio.CancelScope(shield=True):  # bounded by the socket timeouts
            await self.call(remove)

    async def usage(self, key_id: str, limits: Limits,
                    keys: tuple[str, str, str] | None = None) -> Held:
        rpm, tpm, slots = keys or _keys(key_id)
        now = self._clock()

        def read() -> list[Any]:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hmget(rpm, "level", "ts")
                pipe.hmget(tpm, "level", "ts")
                pipe.zcount(slots, f"({now!r}", "+inf")
                return pipe.execute()

        rpm_state, tpm_state, held = await self.call(read)
        return Held(
            concurrent=int(held),
            rpm_left=_level(rpm_state, limits.rpm, now),
            tpm_left=_level(tpm_state, limits.tpm, now),
        )

    async def forget_instances(self, keys: Mapping[str, Collection[str]]) -> None:
        await trio.lowlevel.checkpoint()  # slots are per generation here: ``forget``

    async def run(self) -> None:
        await trio.lowlevel.checkpoint()  # every request goes to Redis: nothing to sync

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.client.close()
        self._pool.disconnect()

    async def call(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread; redis-py's failures as ``LimiterUnavailable``."""
        try:
            return await trio.to_thread.run_sync(call, limiter=self._threads)
        except (redis.RedisError, OSError) as exc:
            detail = ("timed out" if isinstance(exc, redis.TimeoutError | TimeoutError)
                      else "connection failed" if isinstance(exc, redis.ConnectionError | OSError)
                      else "an error")
            if isinstance(exc, redis.ResponseError):
                detail = f"the server said: {exc}"  # its own words: a script or auth fault
            raise LimiterUnavailable(f"rate limiter backend unavailable ({detail})") from exc


def _keys(key_id: str) -> tuple[str, str, str]:
    # One hash tag per API key keeps a script's keys on one slot of a Redis Cluster.
    base = f"arouter:limits:{{{key_id}}}"
    return f"{base}:rpm", f"{base}:tpm", f"{base}:slots"


def _opt(limit: int | None) -> int | str:
    return "" if limit is None else limit


def _level(state: Sequence[bytes | None], capacity: int | None, now: float) -> float | None:
    if capacity is None:
        return None
    level, ts = state
    if level is None or ts is None:
        return float(capacity)
    return refill(float(level), float(ts), capacity, now)
