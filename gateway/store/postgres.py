"""The fleet store: PostgreSQL, shared by every gateway process, driven from worker threads.

Implements ``store.base.Store`` (read its semantics there).

Rules:
- psycopg 3's synchronous driver runs in ``trio.to_thread.run_sync`` under a capacity limiter
  of ``pool_size``, each thread borrowing one connection from a small pool of idle ones. One
  store call is one thread hop is one transaction (``with conn.transaction()``): nothing is
  held across an ``await``, and a cancelled caller waits for its (bounded) thread to finish,
  so a connection is never abandoned mid-transaction.
- Every wait is bounded: ``connect_timeout`` for connecting; server-side, a
  ``statement_timeout`` for each statement, a ``lock_timeout`` for row locks and an
  ``idle_in_transaction_session_timeout``; TCP keepalives plus ``tcp_user_timeout`` for a
  server that vanishes without closing the socket. A server that is *frozen* (SIGSTOP, a
  hung host whose kernel still ACKs) answers none of those, so every read also has a
  client-side deadline (``timeout``): it abandons its thread, whose connection is closed
  when the thread finally returns. Waiting for a pooled connection is under that deadline.
- Liveness: each process holds a session-level advisory lock (two int4 keys: a namespace
  and a hash of its instance id) on a connection of its own for its whole life. The server
  frees it the moment that session ends (process killed, host gone, server restarted), and
  ``claimed`` reads ``pg_locks`` to see whose are held: the store's own knowledge, not a
  heartbeat that an outage of the store itself would make look old.
- A connection that failed at the connection level (``OperationalError``, or left broken or
  mid-transaction) is closed, never returned to the pool.
- Credits: a metered key's reservation is one conditional ``UPDATE ... WHERE balance >= %s``.
  Under READ COMMITTED, a writer that waited for another's row lock re-evaluates that
  ``WHERE`` against the committed row, so any number of processes cannot overspend.
- Batches touch ``api_keys`` rows in key-id order, so two processes cannot lock them in
  opposite orders; a deadlock or serialisation failure that happens anyway (40P01, 40001)
  retries the whole transaction a few times. Results still come back in batch order.
- Every statement is parameterised (FAULTS.md S2); column names come only from the attrs
  field tuples in ``base.py`` and are quoted as identifiers.
- Schema changes are numbered migrations applied in order, each batch in one transaction
  under a transaction-level advisory lock, so processes starting together do not race.
- ``psycopg`` errors become ``StoreUnavailable`` here and nowhere else, with a message that
  names the error class and SQLSTATE only (never the URL, its password or a row's values).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import attrs
import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from gateway.errors import NotMetered, StoreUnavailable
from gateway.store.base import (
    INSTANCE_FIELDS,
    KEY_FIELDS,
    RECORD_FIELDS,
    RESERVATION_FIELDS,
    RESPONSE_FIELDS,
    check_changes,
    check_where,
    lease_grant,
    models_from_text,
    models_to_text,
    read_within,
)
from gateway.store.rows import (
    ApiKey,
    Batch,
    Checkpoint,
    Instance,
    Lease,
    LeaseReturn,
    LeaseTake,
    Release,
    RequestRecord,
    Reservation,
    Settlement,
    StoredResponse,
)

T = TypeVar("T")
Conn = psycopg.Connection[TupleRow]
log = logging.getLogger("arouter.store")

# Columns kept for processes of an older version during a rolling upgrade; this version
# neither reads nor writes them.
LEGACY_COLUMNS = {"reservations": {"prompt_cost"}}

CONNECT_TIMEOUT = 3  # seconds (libpq takes whole seconds)
# Server-side bounds, set on every connection. A statement (lock waits included) this long
# is cancelled by the server; a lock wait this long fails fast (a deadlock-free wait is a few
# ms); a session left idle inside a transaction (a client thread that died) is ended.
SESSION_SETTINGS = {
    "statement_timeout": "10000",
    "lock_timeout": "5000",
    "idle_in_transaction_session_timeout": "30000",
    # The server's side of the socket, for a client host that dies without a word (power,
    # network): its session, and so its liveness claim, ends within about 15 s, not the
    # operating system's default of over two hours.
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
# pg_advisory_lock(int4, int4) namespace for instance liveness locks: "ar" in ASCII.
LIVENESS_NAMESPACE = 0x6172
# A peer that stops answering mid-statement (host gone, cable cut) would block recv() forever
# without these; statement_timeout is enforced by the server, which is the part that is gone.
TCP_PARAMS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
RETRY_ATTEMPTS = 5  # transactions tried on deadlock / serialisation failure
RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# pg_advisory_xact_lock key for migrations: "arouter" in ASCII, so it reads in pg_locks.
MIGRATION_LOCK = 0x61_726F_7574_6572

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: keys with their policy, the ledger, credit reservations and live instances.
    # Money is BIGINT micro-units (pricing.py); times are unix seconds as DOUBLE PRECISION.
    (
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            created_at DOUBLE PRECISION NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE,
            expires_at DOUBLE PRECISION,
            balance BIGINT,
            rpm INTEGER,
            tpm INTEGER,
            max_concurrent INTEGER,
            models TEXT NOT NULL DEFAULT ''
        )
        """,
        """
        CREATE TABLE requests (
            generation_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            model TEXT NOT NULL,
            deployment TEXT NOT NULL,
            client_dialect TEXT NOT NULL,
            upstream_dialect TEXT NOT NULL,
            stream BOOLEAN NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            cached_tokens BIGINT NOT NULL,
            reasoning_tokens BIGINT NOT NULL,
            usage_estimated BOOLEAN NOT NULL,
            cost BIGINT NOT NULL,
            error_type TEXT,
            ttft_ms DOUBLE PRECISION,
            duration_ms DOUBLE PRECISION NOT NULL,
            cancelled BOOLEAN NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX requests_key ON requests (key_id, created_at)",
        """
        CREATE TABLE reservations (
            generation_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            amount BIGINT NOT NULL,
            instance TEXT NOT NULL,
            model TEXT NOT NULL,
            deployment TEXT NOT NULL,
            client_dialect TEXT NOT NULL,
            upstream_dialect TEXT NOT NULL,
            stream BOOLEAN NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            prompt_cost BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX reservations_instance ON reservations (instance)",
        """
        CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL
        )
        """,
    ),
    # 2: which deployments a request tried, and how each attempt ended (issue 6).
    ("ALTER TABLE requests ADD COLUMN attempts TEXT NOT NULL DEFAULT ''",),
    # 3: a streaming request's checkpointed output, which is what a crash charges, and how
    # an instance's liveness is judged (issue 11). prompt_cost stays, unused, for processes
    # of the previous version during a rolling upgrade (they still write and read it).
    (
        "ALTER TABLE reservations ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE reservations ADD COLUMN served_cost BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE reservations ALTER COLUMN prompt_cost SET DEFAULT 0",
        "ALTER TABLE instances ADD COLUMN pid_start BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE instances ADD COLUMN claims BOOLEAN NOT NULL DEFAULT FALSE",
    ),
    # 4: what the deployment that served a request left out of it, as the operator allowed
    # (``drop_unsupported``), and the prompt tokens it wrote to its cache (issue 14).
    (
        "ALTER TABLE requests ADD COLUMN dropped TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE requests ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0",
    ),
    # 5: Responses API answers kept for previous_response_id, per key, until they expire
    # (issue 15).
    (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            response TEXT NOT NULL,
            input_items TEXT NOT NULL,
            items TEXT NOT NULL
        )""",
        "CREATE INDEX responses_expiry ON responses (expires_at)",
    ),
    # 6: credit leased to gateway processes, which admit against it in memory (issue 16).
    (
        """CREATE TABLE leases (
            key_id TEXT NOT NULL,
            instance TEXT NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (key_id, instance)
        )""",
        "CREATE INDEX leases_instance ON leases (instance)",
    ),
)


def _columns(fields: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, fields))


def _marks(fields: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Placeholder() * len(fields))


def _select(fields: Sequence[str], table: str) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(_columns(fields), sql.Identifier(table))


def _insert(fields: Sequence[str], table: str) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), _columns(fields), _marks(fields)
    )


# A key's balance as read: what it may still spend, the credit leased to processes included.
LEASED = sql.SQL("(SELECT coalesce(sum(amount), 0)::bigint FROM leases "
                 "WHERE key_id = api_keys.id)")
_KEY_COLUMNS = sql.SQL(", ").join(
    sql.SQL("balance + {}").format(LEASED) if name == "balance" else sql.Identifier(name)
    for name in KEY_FIELDS)
SELECT_KEY = sql.SQL("SELECT {} FROM api_keys WHERE id = %s").format(_KEY_COLUMNS)
SELECT_KEYS = sql.SQL("SELECT {} FROM api_keys WHERE id = ANY(%s)").format(_KEY_COLUMNS)
LIST_KEYS = sql.SQL("SELECT {} FROM api_keys ORDER BY created_at, id").format(_KEY_COLUMNS)
INSERT_KEY = _insert(KEY_FIELDS, "api_keys")
INSERT_RESERVATION = _insert(RESERVATION_FIELDS, "reservations")
SELECT_RESERVATIONS = _select(RESERVATION_FIELDS, "reservations")
INSERT_RECORD = _insert(RECORD_FIELDS, "requests") + sql.SQL(
    " ON CONFLICT (generation_id) DO NOTHING RETURNING 1"
)
SELECT_RECORDS = _select(RECORD_FIELDS, "requests")
REPLACE_RECORD = sql.SQL("UPDATE requests SET {} WHERE generation_id = %s").format(
    sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(name))
                       for name in RECORD_FIELDS[1:]))
assert RECORD_FIELDS[0] == "generation_id"
UPSERT_INSTANCE = _insert(INSTANCE_FIELDS, "instances") + sql.SQL(
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at"
)
LIST_INSTANCES = _select(INSTANCE_FIELDS, "instances") + sql.SQL(" ORDER BY started_at, id")


class PostgresStore:
    def __init__(self, url: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._url = url
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(pool_size)
        # The liveness claim: its own connection (outside the pool and its limiter), used by
        # one thread at a time; a thread stuck on a frozen server keeps the lock, and the
        # next claim then answers "unknown" at once instead of queueing behind it.
        self._claim_conn: Conn | None = None
        self._claim_lock = threading.Lock()
        self._claim_epoch = 0
        # Idle connections; at most pool_size exist at once because only that many threads
        # (one connection each) run under the limiter. A plain lock: threads touch it.
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._open = False

    def __repr__(self) -> str:
        return f"<PostgresStore open={self._open}>"  # never the URL: it may carry a password

    # -- connections and transactions ------------------------------------------------------

    def _connect(self) -> Conn:
        params: dict[str, Any] = conninfo_to_dict(self._url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        params.setdefault("application_name", "arouter")
        for name, value in TCP_PARAMS.items():  # libpq ignores them on a unix socket
            params.setdefault(name, value)
        # Autocommit: transactions are only the explicit ``conn.transaction()`` blocks, so a
        # pooled connection never sits idle inside one.
        conn = psycopg.connect(**params, autocommit=True)
        try:
            for setting, text in SESSION_SETTINGS.items():
                conn.execute("SELECT set_config(%s, %s, false)", (setting, text))
        except BaseException:
            conn.close()
            raise
        return conn

    def _acquire(self) -> Conn:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: Conn, reusable: bool) -> None:
        reusable = (
            reusable
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )
        if reusable:
            with self._lock:
                if self._open:
                    self._idle.append(conn)
                    return
        conn.close()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        _close_all(idle)

    async def _read(self, fn: Callable[[Conn], T]) -> T:
        """A read: bounded by ``timeout`` (pool wait included), its thread abandoned when
        that passes."""
        return await read_within(self._timeout, partial(self._run, fn, abandon=True))

    async def _run(
        self, fn: Callable[[Conn], T], *, need_open: bool = True, abandon: bool = False
    ) -> T:
        if need_open and not self._open:
            raise StoreUnavailable("the store is not open")

        def call() -> T:
            try:
                return self._call(fn)
            except psycopg.Error as exc:
                message = _describe(exc)
            # Raised outside the handler: not even __context__ keeps the driver's exception
            # (its text, its frames holding the connection).
            raise StoreUnavailable(message)

        return await trio.to_thread.run_sync(call, limiter=self._limiter,
                                             abandon_on_cancel=abandon)

    def _call(self, fn: Callable[[Conn], T]) -> T:
        conn = self._acquire()
        reusable = False
        try:
            result = _transaction(conn, fn)
            reusable = True
            return result
        except psycopg.OperationalError:
            # The connection itself may be unusable: do not pool it. If it is broken, the
            # server probably restarted or failed over and the idle ones are as dead: drop
            # them too, rather than fail one call with each.
            if conn.broken:
                self._drop_idle()
            raise
        except BaseException:
            # A statement-level failure (or NotMetered, ValueError) rolled back cleanly;
            # _release still checks the connection's state.
            reusable = True
            raise
        finally:
            self._release(conn, reusable)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._open:
            return
        self._open = True
        try:
            await self.migrate()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        with self._lock:
            self._open = False
            idle, self._idle = self._idle, []
        # The claim connection too, unless a thread still uses it: that thread closes it
        # on its way out, having seen the store closed.
        if self._claim_lock.acquire(blocking=False):
            try:
                claim, self._claim_conn = self._claim_conn, None
            finally:
                self._claim_lock.release()
            if claim is not None:
                idle.append(claim)  # closing the session frees its liveness lock
        # Connections still borrowed by running threads are closed as they come back. Shielded:
        # these are already out of the pool, and a cancelled close would leak them (closing
        # is quick: a terminate message and a socket close).
        if idle:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close_all, idle)

    async def migrate(self) -> tuple[int, int]:
        # Allowed before open() too (``arouter db migrate``): the connection is then closed
        # on return instead of pooled.
        return await self._run(_migrate, need_open=False)

    # -- keys -------------------------------------------------------------------------------

    async def count_keys(self) -> int:
        def count(conn: Conn) -> int:
            row = conn.execute("SELECT count(*) FROM api_keys").fetchone()
            return int(row[0]) if row else 0

        return await self._read(count)

    async def add_key(self, key: ApiKey) -> None:
        row = _key_row(key)
        await self._run(lambda conn: conn.execute(INSERT_KEY, row))

    async def find_key(self, key_id: str) -> ApiKey | None:
        return await self._read(lambda conn: _find_key(conn, key_id))

    async def find_keys(self, key_ids: Sequence[str]) -> list[ApiKey]:
        rows = await self._read(lambda conn: conn.execute(SELECT_KEYS, (list(key_ids),))
                                .fetchall())
        return [_key(row) for row in rows]

    async def list_keys(self) -> list[ApiKey]:
        rows = await self._read(lambda conn: conn.execute(LIST_KEYS).fetchall())
        return [_key(row) for row in rows]

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        check_changes(changes)
        values = {name: _key_value(name, value) for name, value in changes.items()}
        # A balance set is what the key may spend from now on, leases included.
        update = sql.SQL("UPDATE api_keys SET {} WHERE id = %s").format(
            sql.SQL(", ").join(
                sql.SQL("balance = GREATEST(%s - {}, 0)").format(LEASED) if name == "balance"
                else sql.SQL("{} = %s").format(sql.Identifier(name)) for name in values)
        )

        def apply(conn: Conn) -> ApiKey | None:
            if values:  # no changes: just the current row
                conn.execute(update, (*values.values(), key_id))
            return _find_key(conn, key_id)

        return await self._run(apply)

    async def top_up(self, key_id: str, amount: int) -> ApiKey | None:
        def top_up(conn: Conn) -> ApiKey | None:
            # Locks the row, so the check and the update see the same balance.
            key = _find_key(conn, key_id, lock=True)
            if key is None:
                return None
            if key.balance is None:
                raise NotMetered("this key has no balance limit; set one first")
            conn.execute(
                "UPDATE api_keys SET balance = GREATEST(balance + %s, 0) WHERE id = %s",
                (amount, key_id),
            )
            return _find_key(conn, key_id)

        return await self._run(top_up)

    # -- credits and the ledger -------------------------------------------------------------

    async def reserve(self, batch: Sequence[Reservation]) -> list[bool]:
        return [bool(ok) for ok in await self.commit(Batch(reservations=batch))]

    async def settle(self, batch: Sequence[Settlement]) -> None:
        await self.commit(Batch(settlements=batch))

    async def commit(self, batch: Batch) -> list[int]:
        if not batch:
            return []
        # Settlements first: credits they return are there for the reservations after them.
        def commit(conn: Conn) -> list[int]:
            _settle_in(conn, batch.settlements)
            _release_in(conn, batch.releases)
            _checkpoint_in(conn, batch.checkpoints)
            _return_in(conn, batch.returns)
            return [*_reserve_in(conn, batch.reservations), *_take_in(conn, batch.takes)]

        # Waited for, but abandoned if the ledger writer itself is cancelled (shutdown past
        # its deadline): its rows then go to the outbox; a lost reservation is reconciled.
        return await self._run(commit, abandon=True)

    async def reservations(self, instance: str | None = None) -> list[Reservation]:
        query: sql.Composable = SELECT_RESERVATIONS
        args: tuple[Any, ...] = ()
        if instance is not None:
            query, args = query + sql.SQL(" WHERE instance = %s"), (instance,)
        query = query + sql.SQL(" ORDER BY created_at, generation_id")
        rows = await self._read(lambda conn: conn.execute(query, args).fetchall())
        return [Reservation(*row) for row in rows]

    async def leases(self, instance: str | None = None) -> list[Lease]:
        query = "SELECT key_id, instance, amount FROM leases"
        args: tuple[Any, ...] = ()
        if instance is not None:
            query, args = query + " WHERE instance = %s", (instance,)
        rows = await self._read(lambda conn: conn.execute(
            query + " ORDER BY key_id, instance", args).fetchall())
        return [Lease(*row) for row in rows]

    async def reservation(self, generation_id: str) -> Reservation | None:
        query = SELECT_RESERVATIONS + sql.SQL(" WHERE generation_id = %s")
        row = await self._read(lambda conn: conn.execute(query, (generation_id,)).fetchone())
        return None if row is None else Reservation(*row)

    async def record(self, generation_id: str) -> RequestRecord | None:
        found = await self.records(generation_id=generation_id)
        return found[0] if found else None

    async def records(self, **where: Any) -> list[RequestRecord]:
        check_where(where)
        clauses: list[sql.Composable] = []
        args: list[Any] = []
        for name, value in where.items():
            # Python equality: None matches NULL (``= NULL`` would match nothing).
            if value is None:
                clauses.append(sql.SQL("{} IS NULL").format(sql.Identifier(name)))
            else:
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
                args.append(value)
        query: sql.Composable = SELECT_RECORDS
        if clauses:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
        query = query + sql.SQL(" ORDER BY created_at, generation_id")
        rows = await self._read(lambda conn: conn.execute(query, args).fetchall())
        return [RequestRecord(*row) for row in rows]

    # -- instances --------------------------------------------------------------------------

    async def heartbeat(self, instance: Instance) -> None:
        row = attrs.astuple(instance)
        await self._run(lambda conn: conn.execute(UPSERT_INSTANCE, row))

    async def instances(self) -> list[Instance]:
        rows = await self._read(lambda conn: conn.execute(LIST_INSTANCES).fetchall())
        return [Instance(*row) for row in rows]

    # -- stored Responses API answers ------------------------------------------------------

    async def save_response(self, response: StoredResponse) -> None:
        query = sql.SQL("INSERT INTO responses ({}) VALUES ({}) ON CONFLICT (id) DO NOTHING"
                        ).format(_columns(RESPONSE_FIELDS),
                                 sql.SQL(", ").join(sql.Placeholder() * len(RESPONSE_FIELDS)))
        row = attrs.astuple(response)
        await self._run(lambda conn: conn.execute(query, row))

    async def find_response(self, response_id: str, key_id: str,
                            now: float) -> StoredResponse | None:
        query = sql.SQL("SELECT {} FROM responses WHERE id = %s AND key_id = %s AND "
                        "expires_at > %s").format(_columns(RESPONSE_FIELDS))
        rows = await self._read(
            lambda conn: conn.execute(query, (response_id, key_id, now)).fetchall())
        return StoredResponse(*rows[0]) if rows else None

    async def delete_response(self, response_id: str, key_id: str) -> bool:
        cursor = await self._run(lambda conn: conn.execute(
            "DELETE FROM responses WHERE id = %s AND key_id = %s", (response_id, key_id)))
        return bool(cursor.rowcount)

    async def purge_responses(self, now: float) -> int:
        cursor = await self._run(lambda conn: conn.execute(
            "DELETE FROM responses WHERE expires_at <= %s", (now,)))
        return int(cursor.rowcount)

    async def forget_instance(self, instance_id: str) -> None:
        await self._run(
            lambda conn: conn.execute("DELETE FROM instances WHERE id = %s", (instance_id,))
        )

    async def claim(self, instance: Instance) -> bool:
        if not self._open:
            raise StoreUnavailable("the store is not open")
        key = liveness_key(instance.id)

        def hold() -> bool:
            if not self._claim_lock.acquire(blocking=False):
                return False  # a check is still stuck on a frozen server: not confirmed
            try:
                held = self._open and self._hold_claim(key)
                if not self._open:  # closed meanwhile (this thread may have been abandoned)
                    self._drop_claim()
                    return False
                return held
            finally:
                self._claim_lock.release()

        return await read_within(
            self._timeout, partial(trio.to_thread.run_sync, hold, abandon_on_cancel=True))

    def _drop_claim(self) -> None:
        conn, self._claim_conn = self._claim_conn, None
        if conn is not None:
            conn.close()  # the session ends: the server frees its lock

    def _hold_claim(self, key: tuple[int, int]) -> bool:
        conn = self._claim_conn
        if conn is not None and not conn.broken:
            try:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = %s AND objid = %s "
                    "AND objsubid = 2", key).fetchone()
                if row and row[0]:
                    return True  # held, on the same session as before: without a break
            except psycopg.Error:
                pass
            conn.close()
        self._claim_conn = None
        try:
            conn = self._connect()
            taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(_describe(exc)) from None
        if not (taken and taken[0]):
            conn.close()  # held by another session: ours is still ending on the server
            return False
        self._claim_conn = conn
        return False  # taken now, after a break (or for the first time)

    async def claimed(self, instance_ids: Sequence[str]) -> set[str] | None:
        keys = {liveness_key(i): i for i in instance_ids}

        def held(conn: Conn) -> set[str]:
            rows = conn.execute(
                "SELECT classid::bigint, objid::bigint FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = %s "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (LIVENESS_NAMESPACE,)).fetchall()
            return {keys[(int(a), int(b))] for a, b in rows if (int(a), int(b)) in keys}

        return await self._read(held)


def _transaction(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """``fn`` in one transaction, retried whole if the server chose it as a deadlock victim
    or could not serialise it (the other side has committed or rolled back by then)."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            with conn.transaction():
                return fn(conn)
        except RETRYABLE:
            if attempt == RETRY_ATTEMPTS:
                raise
            # Jittered backoff so the two victims of one deadlock do not collide again.
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def _migrate(conn: Conn) -> tuple[int, int]:
    # Held until this transaction ends: a second process blocks here, then sees the tables.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    before = int(row[0]) if row else 0
    for number, statements in enumerate(MIGRATIONS[before:], start=before + 1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
    # A newer gateway may already have migrated further: leave its schema alone.
    return before, max(before, len(MIGRATIONS))


def _reserve_in(conn: Conn, batch: Sequence[Reservation]) -> list[bool]:
    """Reserve each item (keys locked in key order: no deadlock between processes)."""
    admitted = [False] * len(batch)
    for i in sorted(range(len(batch)), key=lambda i: (batch[i].key_id, i)):
        item = batch[i]
        if item.leased:  # paid for by its process's lease: the row only records it
            conn.execute(INSERT_RESERVATION + sql.SQL(" ON CONFLICT (generation_id) DO NOTHING"),
                         _reservation_row(attrs.evolve(item, amount=0)))
            admitted[i] = True
            continue
        # The atomic check-and-take for a metered key (and only for a priced model): NULL >=
        # amount is not true, so an unmetered key falls through to the lookup below.
        taken = item.priced and conn.execute(
            "UPDATE api_keys SET balance = balance - %s "
            "WHERE id = %s AND balance >= %s AND NOT revoked RETURNING 1",
            (item.amount, item.key_id, item.amount),
        ).fetchone() is not None
        if not taken:
            unmetered = conn.execute(
                "SELECT 1 FROM api_keys WHERE id = %s AND balance IS NULL AND NOT revoked",
                (item.key_id,),
            ).fetchone()
            if unmetered is None:
                continue  # missing, revoked, short of credits, or metered and unpriced
            item = attrs.evolve(item, amount=0)  # unmetered: nothing is held
        conn.execute(INSERT_RESERVATION, _reservation_row(item))
        admitted[i] = True
    return admitted


def _settle_in(conn: Conn, batch: Sequence[Settlement]) -> None:
    """Settle each item, idempotently (keys locked in key order)."""
    for settlement in sorted(batch, key=lambda s: (s.record.key_id, s.record.generation_id)):
        record = settlement.record
        held = conn.execute(
            "DELETE FROM reservations WHERE generation_id = %s RETURNING amount",
            (record.generation_id,),
        ).fetchone()
        back = held[0] if held else 0  # what the reservation held comes back
        charge = 0
        row = attrs.astuple(record, recurse=False)
        if conn.execute(INSERT_RECORD, row).fetchone() is not None:
            charge = record.cost
        elif record.status != "interrupted":
            # Settled before: the first settlement stands, unless it was a reconciler's
            # estimate and this is the real thing (the row lock makes this happen once).
            before = conn.execute(
                "SELECT cost FROM requests WHERE generation_id = %s AND status = 'interrupted' "
                "FOR UPDATE", (record.generation_id,)).fetchone()
            if before is not None:
                conn.execute(REPLACE_RECORD, (*row[1:], record.generation_id))
                charge = record.cost - before[0]  # the real one for the estimate's charge
        if charge > 0 and settlement.lease:
            charge -= _spend_lease(conn, record.key_id, settlement.lease, charge)
        back -= charge
        if back:
            conn.execute(
                "UPDATE api_keys SET balance = GREATEST(balance + %s, 0) "
                "WHERE id = %s AND balance IS NOT NULL",
                (back, record.key_id),
            )


def _checkpoint_in(conn: Conn, batch: Sequence[Checkpoint]) -> None:
    for c in sorted(batch, key=lambda c: c.generation_id):
        conn.execute(
            "UPDATE reservations SET deployment = %s, upstream_dialect = %s, "
            "completion_tokens = %s, served_cost = %s WHERE generation_id = %s",
            (c.deployment, c.upstream_dialect, c.completion_tokens, c.served_cost,
             c.generation_id))


def _release_in(conn: Conn, batch: Sequence[Release]) -> None:
    for release in sorted(batch, key=lambda r: r.generation_id):
        held = conn.execute(
            "DELETE FROM reservations WHERE generation_id = %s RETURNING key_id, amount",
            (release.generation_id,),
        ).fetchone()
        if held is not None and held[1]:
            conn.execute("UPDATE api_keys SET balance = balance + %s "
                         "WHERE id = %s AND balance IS NOT NULL", (held[1], held[0]))


def _lease_amount(conn: Conn, key_id: str, instance: str) -> int | None:
    row = conn.execute("SELECT amount FROM leases WHERE key_id = %s AND instance = %s "
                       "FOR UPDATE", (key_id, instance)).fetchone()
    return None if row is None else int(row[0])


def _spend_lease(conn: Conn, key_id: str, instance: str, amount: int) -> int:
    """Take up to ``amount`` out of a lease; how much it held of it."""
    spent = min(amount, _lease_amount(conn, key_id, instance) or 0)
    if spent:
        conn.execute("UPDATE leases SET amount = amount - %s WHERE key_id = %s "
                     "AND instance = %s", (spent, key_id, instance))
    return spent


def _take_in(conn: Conn, batch: Sequence[LeaseTake]) -> list[int]:
    """Lease from each key (keys locked in key order: no deadlock between processes)."""
    granted = [0] * len(batch)
    for i in sorted(range(len(batch)), key=lambda i: (batch[i].key_id, i)):
        take = batch[i]
        row = conn.execute("SELECT balance FROM api_keys WHERE id = %s AND NOT revoked "
                           "AND balance IS NOT NULL FOR UPDATE", (take.key_id,)).fetchone()
        amount = lease_grant(int(row[0]), take) if row is not None else 0
        if amount:
            conn.execute("UPDATE api_keys SET balance = balance - %s WHERE id = %s",
                         (amount, take.key_id))
            conn.execute("INSERT INTO leases (key_id, instance, amount) VALUES (%s, %s, %s) "
                         "ON CONFLICT (key_id, instance) DO UPDATE SET "
                         "amount = leases.amount + excluded.amount",
                         (take.key_id, take.instance, amount))
        granted[i] = amount
    return granted


def _return_in(conn: Conn, batch: Sequence[LeaseReturn]) -> None:
    for item in sorted(batch, key=lambda r: (r.key_id, r.instance)):
        held = _lease_amount(conn, item.key_id, item.instance)
        if held is None:
            continue
        back = held if item.amount is None else min(item.amount, held)
        if item.amount is None:
            conn.execute("DELETE FROM leases WHERE key_id = %s AND instance = %s",
                         (item.key_id, item.instance))
        else:
            conn.execute("UPDATE leases SET amount = amount - %s WHERE key_id = %s "
                         "AND instance = %s", (back, item.key_id, item.instance))
        if back:
            conn.execute("UPDATE api_keys SET balance = balance + %s "
                         "WHERE id = %s AND balance IS NOT NULL", (back, item.key_id))


def _reservation_row(item: Reservation) -> tuple[Any, ...]:
    return tuple(getattr(item, name) for name in RESERVATION_FIELDS)


def liveness_key(instance_id: str) -> tuple[int, int]:
    """The (namespace, id hash) int4 pair of an instance's advisory lock (as pg_locks shows
    it: classid, objid, both non-negative here)."""
    digest = hashlib.sha256(instance_id.encode()).digest()
    return LIVENESS_NAMESPACE, int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


# SQLSTATE classes (and a few codes) in words a client or an operator can act on.
_SQLSTATES = {
    "08": "the connection to PostgreSQL failed",
    "28": "PostgreSQL refused the credentials",
    "3D": "the database does not exist",
    "40": "a transaction conflict",
    "53": "PostgreSQL is out of resources",
    "55P03": "a lock wait timed out",
    "57014": "a statement timed out",
    "57P": "PostgreSQL is shutting down or restarting",
}


def _describe(exc: psycopg.Error) -> str:
    """What went wrong, in words: never the driver's text (which can quote the host, a
    row's values or parts of the conninfo), nor a Python class name. Both go to the log."""
    code = getattr(exc, "sqlstate", None) or ""
    cause = _SQLSTATES.get(code) or _SQLSTATES.get(code[:3]) or _SQLSTATES.get(code[:2])
    if cause is None:
        cause = ("PostgreSQL could not be reached" if isinstance(exc, psycopg.OperationalError)
                 else "a database error")
    log.debug("store error: %s", cause,
                extra={"error": type(exc).__name__, "sqlstate": code or None})
    return f"the store is unavailable: {cause}" + (f" (SQLSTATE {code})" if code else "")


def _close_all(conns: list[Conn]) -> None:
    for conn in conns:
        conn.close()


def _find_key(conn: Conn, key_id: str, lock: bool = False) -> ApiKey | None:
    query = SELECT_KEY + sql.SQL(" FOR UPDATE") if lock else SELECT_KEY
    row = conn.execute(query, (key_id,)).fetchone()
    return None if row is None else _key(row)


def _key_value(name: str, value: Any) -> Any:
    return models_to_text(value) if name == "models" else value


def _key_row(key: ApiKey) -> tuple[Any, ...]:
    return tuple(_key_value(name, getattr(key, name)) for name in KEY_FIELDS)


def _key(row: tuple[Any, ...]) -> ApiKey:
    values = dict(zip(KEY_FIELDS, row, strict=True))
    values["models"] = models_from_text(values["models"])
    return ApiKey(**values)
