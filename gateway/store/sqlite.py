"""The embedded store: one SQLite file in WAL mode, driven from one worker thread at a time.

Implements ``store.base.Store`` (read its semantics there).

Rules:
- SQLite calls are blocking, so each runs in ``trio.to_thread.run_sync`` under a capacity
  limiter of one: a single writer per process, and no lock is ever held across an
  ``await``. Each call is one explicit ``BEGIN IMMEDIATE`` transaction, so several processes
  on one file (``arouter serve --workers N``) serialise on SQLite's own write lock.
- Every statement is parameterised (FAULTS.md S2); column names come only from the attrs
  field tuples in ``base.py``.
- Schema changes are numbered migrations applied in order (``PRAGMA user_version``), at
  open and by ``arouter db migrate``.
- ``sqlite3`` errors become ``StoreUnavailable`` here and nowhere else.
- Reads give up after ``timeout`` seconds (a write lock held elsewhere for longer than
  ``busy_timeout``, a stuck disk) and abandon their thread; writes are waited for.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

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
from gateway.store.files import private_file, private_folder
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
log = logging.getLogger("arouter.store")

MIGRATIONS: tuple[str, ...] = (
    # 1: keys and request records (issue 2)
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE requests (
        generation_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        client_dialect TEXT NOT NULL,
        stream INTEGER NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_estimated INTEGER NOT NULL,
        error_type TEXT,
        ttft_ms REAL,
        duration_ms REAL NOT NULL,
        cancelled INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX requests_key ON requests (key_id, created_at);
    """,
    # 2: key policy, credits, reservations and live instances (issue 5)
    """
    ALTER TABLE api_keys ADD COLUMN expires_at REAL;
    ALTER TABLE api_keys ADD COLUMN balance INTEGER;
    ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
    ALTER TABLE api_keys ADD COLUMN tpm INTEGER;
    ALTER TABLE api_keys ADD COLUMN max_concurrent INTEGER;
    ALTER TABLE api_keys ADD COLUMN models TEXT NOT NULL DEFAULT '';
    ALTER TABLE requests ADD COLUMN upstream_dialect TEXT NOT NULL DEFAULT '';
    ALTER TABLE requests ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE reservations (
        generation_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        amount INTEGER NOT NULL,
        instance TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT NOT NULL,
        client_dialect TEXT NOT NULL,
        upstream_dialect TEXT NOT NULL,
        stream INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        prompt_cost INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX reservations_instance ON reservations (instance);
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
    # 3: which deployments a request tried, and how each attempt ended (issue 6)
    "ALTER TABLE requests ADD COLUMN attempts TEXT NOT NULL DEFAULT ''",
    # 4: a streaming request's checkpointed output, which is what a crash charges, and how
    # an instance's liveness is judged (issue 11)
    """
    ALTER TABLE reservations ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reservations ADD COLUMN served_cost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reservations DROP COLUMN prompt_cost;
    ALTER TABLE instances ADD COLUMN pid_start INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: what the deployment that served a request left out of it, as the operator allowed
    # (``drop_unsupported``), and the prompt tokens it wrote to its cache (issue 14)
    """
    ALTER TABLE requests ADD COLUMN dropped TEXT NOT NULL DEFAULT '';
    ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: Responses API answers kept for previous_response_id, per key, until they expire
    # (issue 15)
    """
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        response TEXT NOT NULL,
        input_items TEXT NOT NULL,
        items TEXT NOT NULL
    );
    CREATE INDEX responses_expiry ON responses (expires_at);
    """,
    # 7: credit leased to gateway processes, which admit against it in memory (issue 16)
    """
    CREATE TABLE leases (
        key_id TEXT NOT NULL,
        instance TEXT NOT NULL,
        amount INTEGER NOT NULL,
        PRIMARY KEY (key_id, instance)
    );
    CREATE INDEX leases_instance ON leases (instance);
    """,
)

_BOOL_KEY = ("revoked",)
_BOOL_RECORD = ("stream", "usage_estimated", "cancelled")


def _columns(fields: Sequence[str]) -> str:
    return ", ".join(fields)


def _marks(fields: Sequence[str]) -> str:
    return ", ".join("?" * len(fields))


class SqliteStore:
    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read: bounded by ``timeout``, its thread abandoned when that passes."""
        return await read_within(self._timeout, partial(self._run, fn, abandon=True))

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, abandon: bool = False) -> T:
        db = self._db
        if db is None:
            raise StoreUnavailable("the store is not open")

        def call() -> T:
            # One explicit transaction per call: the connection is in autocommit mode, where
            # executemany would otherwise commit row by row (measured: 300 us CPU per lone
            # insert, 66 us per row of 20 autocommitted, see the group commit in ledger.py).
            # IMMEDIATE takes the write lock up front, so two processes cannot both read a
            # balance and then both write it.
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
            except (sqlite3.Error, ValueError, OverflowError, TypeError) as exc:
                # Also a value SQLite cannot hold (an integer past 2**63): this boundary
                # maps everything the driver raises.
                raise StoreUnavailable(_describe(exc)) from None

        return await trio.to_thread.run_sync(call, limiter=self._limiter,
                                             abandon_on_cancel=abandon)

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < (3, 35):  # DELETE ... RETURNING settles the ledger
            raise StoreUnavailable(
                f"SQLite 3.35 or newer is required, not {sqlite3.sqlite_version}")
        try:
            if self.path != ":memory:":
                private_folder(Path(self.path).parent)
                # Keys' hashes, balances and usage: readable by this user only. SQLite gives
                # the -wal and -shm files the database file's own mode.
                private_file(Path(self.path))
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {_describe(exc)}") from None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            db = self._connect()
            try:
                _migrate(db)
            except sqlite3.Error as exc:
                db.close()
                raise StoreUnavailable(f"cannot migrate {self.path}: {_describe(exc)}") from None
            return db

        self._db = await trio.to_thread.run_sync(connect, limiter=self._limiter)

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations (also before ``open``, as ``arouter db migrate`` does)."""

        def migrate() -> tuple[int, int]:
            db = self._db or self._connect()
            try:
                return _migrate(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot migrate {self.path}: {_describe(exc)}") from None
            finally:
                if db is not self._db:
                    db.close()

        return await trio.to_thread.run_sync(migrate, limiter=self._limiter)

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)

    # -- keys -----------------------------------------------------------------------------

    async def count_keys(self) -> int:
        return await self._read(
            lambda db: db.execute("SELECT count(*) FROM api_keys").fetchone()[0])

    async def add_key(self, key: ApiKey) -> None:
        row = _key_row(key)
        await self._run(lambda db: db.execute(
            f"INSERT INTO api_keys ({_columns(KEY_FIELDS)}) VALUES ({_marks(KEY_FIELDS)})", row
        ))

    async def find_key(self, key_id: str) -> ApiKey | None:
        return await self._read(lambda db: _find_key(db, key_id))

    async def find_keys(self, key_ids: Sequence[str]) -> list[ApiKey]:
        def find(db: sqlite3.Connection) -> list[ApiKey]:
            found = []
            for start in range(0, len(key_ids), 500):  # under SQLite's bound-variable limit
                chunk = key_ids[start:start + 500]
                found += [_key(row) for row in db.execute(
                    f"{_SELECT_KEY} WHERE id IN ({_marks(chunk)})", tuple(chunk))]
            return found

        return await self._read(find)

    async def list_keys(self) -> list[ApiKey]:
        def list_all(db: sqlite3.Connection) -> list[ApiKey]:
            return [_key(row) for row in db.execute(f"{_SELECT_KEY} ORDER BY created_at, id")]

        return await self._read(list_all)

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        check_changes(changes)
        values = {k: _key_value(k, v) for k, v in changes.items()}

        def update(db: sqlite3.Connection) -> ApiKey | None:
            if values:
                # A balance set is what the key may spend from now on, leases included.
                sets = ", ".join(f"{name} = max(0, ? - {_LEASED})" if name == "balance"
                                 else f"{name} = ?" for name in values)
                db.execute(f"UPDATE api_keys SET {sets} WHERE id = ?", (*values.values(), key_id))
            return _find_key(db, key_id)

        return await self._run(update)

    async def top_up(self, key_id: str, amount: int) -> ApiKey | None:
        def top_up(db: sqlite3.Connection) -> ApiKey | None:
            key = _find_key(db, key_id)
            if key is None:
                return None
            if key.balance is None:
                raise NotMetered("this key has no balance limit; set one first")
            db.execute("UPDATE api_keys SET balance = max(0, balance + ?) WHERE id = ?",
                       (amount, key_id))
            return _find_key(db, key_id)

        return await self._run(top_up)

    # -- credits and the ledger -------------------------------------------------------------

    async def reserve(self, batch: Sequence[Reservation]) -> list[bool]:
        return [bool(ok) for ok in await self.commit(Batch(reservations=batch))]

    async def settle(self, batch: Sequence[Settlement]) -> None:
        await self.commit(Batch(settlements=batch))

    async def commit(self, batch: Batch) -> list[int]:
        # Settlements first: credits they return are there for the reservations after them.
        def commit(db: sqlite3.Connection) -> list[int]:
            _settle_in(db, batch.settlements)
            _release_in(db, batch.releases)
            _checkpoint_in(db, batch.checkpoints)
            _return_in(db, batch.returns)
            return [*_reserve_in(db, batch.reservations), *_take_in(db, batch.takes)]

        # Waited for, but abandoned if the ledger writer itself is cancelled (shutdown past
        # its deadline): its rows then go to the outbox; a lost reservation is reconciled.
        return await self._run(commit, abandon=True)

    async def reservations(self, instance: str | None = None) -> list[Reservation]:
        sql = f"SELECT {_columns(RESERVATION_FIELDS)} FROM reservations"
        args: tuple[Any, ...] = ()
        if instance is not None:
            sql, args = sql + " WHERE instance = ?", (instance,)
        rows = await self._read(lambda db: db.execute(sql, args).fetchall())
        return [_reservation(row) for row in rows]

    async def leases(self, instance: str | None = None) -> list[Lease]:
        sql = "SELECT key_id, instance, amount FROM leases"
        args: tuple[Any, ...] = ()
        if instance is not None:
            sql, args = sql + " WHERE instance = ?", (instance,)
        rows = await self._read(lambda db: db.execute(sql + " ORDER BY key_id, instance",
                                                      args).fetchall())
        return [Lease(*row) for row in rows]

    async def reservation(self, generation_id: str) -> Reservation | None:
        sql = (f"SELECT {_columns(RESERVATION_FIELDS)} FROM reservations "
               "WHERE generation_id = ?")
        row = await self._read(lambda db: db.execute(sql, (generation_id,)).fetchone())
        return None if row is None else _reservation(row)

    async def record(self, generation_id: str) -> RequestRecord | None:
        found = await self.records(generation_id=generation_id)
        return found[0] if found else None

    async def records(self, **where: Any) -> list[RequestRecord]:
        check_where(where)
        clauses = " AND ".join(f"{name} = ?" for name in where)
        sql = f"SELECT {_columns(RECORD_FIELDS)} FROM requests"
        if clauses:
            sql += f" WHERE {clauses}"
        rows = await self._read(lambda db: db.execute(sql, tuple(where.values())).fetchall())
        return [_record(row) for row in rows]

    # -- stored Responses API answers ------------------------------------------------------

    async def save_response(self, response: StoredResponse) -> None:
        row = attrs.astuple(response)
        await self._run(lambda db: db.execute(
            f"INSERT INTO responses ({_columns(RESPONSE_FIELDS)}) VALUES "
            f"({_marks(RESPONSE_FIELDS)}) ON CONFLICT (id) DO NOTHING", row))

    async def find_response(self, response_id: str, key_id: str,
                            now: float) -> StoredResponse | None:
        rows = await self._read(lambda db: db.execute(
            f"SELECT {_columns(RESPONSE_FIELDS)} FROM responses WHERE id = ? AND key_id = ? "
            "AND expires_at > ?", (response_id, key_id, now)).fetchall())
        return StoredResponse(*rows[0]) if rows else None

    async def delete_response(self, response_id: str, key_id: str) -> bool:
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM responses WHERE id = ? AND key_id = ?", (response_id, key_id)))
        return bool(cursor.rowcount)

    async def purge_responses(self, now: float) -> int:
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM responses WHERE expires_at <= ?", (now,)))
        return int(cursor.rowcount)

    # -- instances --------------------------------------------------------------------------

    async def heartbeat(self, instance: Instance) -> None:
        row = attrs.astuple(instance)
        await self._run(lambda db: db.execute(
            f"INSERT INTO instances ({_columns(INSTANCE_FIELDS)}) VALUES "
            f"({_marks(INSTANCE_FIELDS)}) ON CONFLICT (id) DO UPDATE SET "
            "heartbeat_at = excluded.heartbeat_at", row))

    async def instances(self) -> list[Instance]:
        sql = f"SELECT {_columns(INSTANCE_FIELDS)} FROM instances"
        rows = await self._read(lambda db: db.execute(sql).fetchall())
        return [attrs.evolve(Instance(*row), claims=bool(row[-1])) for row in rows]

    async def forget_instance(self, instance_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM instances WHERE id = ?", (instance_id,)))

    async def claim(self, instance: Instance) -> bool:
        # One file, one host: whether a process lives is for its PID to say (accounts/liveness.py).
        await trio.lowlevel.checkpoint()
        return True

    async def claimed(self, instance_ids: Sequence[str]) -> set[str] | None:
        await trio.lowlevel.checkpoint()
        return None


_INSERT_RESERVATION = (f"INSERT INTO reservations ({_columns(RESERVATION_FIELDS)}) "
                       f"VALUES ({_marks(RESERVATION_FIELDS)})")
_INSERT_RECORD = (f"INSERT INTO requests ({_columns(RECORD_FIELDS)}) "
                  f"VALUES ({_marks(RECORD_FIELDS)}) ON CONFLICT (generation_id) DO NOTHING")
_REPLACE_RECORD = ("UPDATE requests SET "
                   + ", ".join(f"{name} = ?" for name in RECORD_FIELDS[1:])
                   + " WHERE generation_id = ?")
assert RECORD_FIELDS[0] == "generation_id"


def _reservation_row(item: Reservation) -> tuple[Any, ...]:
    return tuple(getattr(item, name) for name in RESERVATION_FIELDS)


def _reserve_in(db: sqlite3.Connection, batch: Sequence[Reservation]) -> list[bool]:
    admitted = []
    for item in batch:
        if item.leased:  # paid for by its process's lease: the row only records it
            db.execute(_INSERT_RESERVATION + " ON CONFLICT (generation_id) DO NOTHING",
                       _reservation_row(attrs.evolve(item, amount=0)))
            admitted.append(True)
            continue
        found = db.execute(
            "SELECT balance FROM api_keys WHERE id = ? AND revoked = 0", (item.key_id,)
        ).fetchone()
        # A metered key pays from its balance, and only for a priced model.
        ok = found is not None and (
            found[0] is None
            or (item.priced and db.execute(
                "UPDATE api_keys SET balance = balance - ? WHERE id = ? AND balance >= ?",
                (item.amount, item.key_id, item.amount),
            ).rowcount == 1)
        )
        if ok:
            if found[0] is None:  # unmetered: nothing is held, whatever was asked
                item = attrs.evolve(item, amount=0)
            db.execute(_INSERT_RESERVATION, _reservation_row(item))
        admitted.append(ok)
    return admitted


def _settle_in(db: sqlite3.Connection, batch: Sequence[Settlement]) -> None:
    for settlement in batch:
        record = settlement.record
        held = db.execute(
            "DELETE FROM reservations WHERE generation_id = ? RETURNING amount",
            (record.generation_id,),
        ).fetchall()
        back = held[0][0] if held else 0  # what the reservation held comes back
        charge = 0
        if db.execute(_INSERT_RECORD, attrs.astuple(record, recurse=False)).rowcount == 1:
            charge = record.cost
        else:
            # Settled before: the first settlement stands, unless it was a reconciler's
            # estimate and this is the real thing.
            before = db.execute(
                "SELECT cost FROM requests WHERE generation_id = ? AND status = 'interrupted'",
                (record.generation_id,),
            ).fetchone()
            if before is not None and record.status != "interrupted":
                db.execute(_REPLACE_RECORD, (*attrs.astuple(record, recurse=False)[1:],
                                             record.generation_id))
                charge = record.cost - before[0]  # the real one for the estimate's charge
        if charge > 0 and settlement.lease:
            charge -= _spend_lease(db, record.key_id, settlement.lease, charge)
        back -= charge
        if back:
            db.execute(
                "UPDATE api_keys SET balance = max(0, balance + ?) "
                "WHERE id = ? AND balance IS NOT NULL",
                (back, record.key_id),
            )


def _checkpoint_in(db: sqlite3.Connection, batch: Sequence[Checkpoint]) -> None:
    db.executemany(
        "UPDATE reservations SET deployment = ?, upstream_dialect = ?, completion_tokens = ?, "
        "served_cost = ? WHERE generation_id = ?",
        [(c.deployment, c.upstream_dialect, c.completion_tokens, c.served_cost,
          c.generation_id) for c in batch],
    )


def _release_in(db: sqlite3.Connection, batch: Sequence[Release]) -> None:
    for release in batch:
        held = db.execute(
            "DELETE FROM reservations WHERE generation_id = ? RETURNING key_id, amount",
            (release.generation_id,),
        ).fetchone()
        if held is not None:
            db.execute("UPDATE api_keys SET balance = balance + ? "
                       "WHERE id = ? AND balance IS NOT NULL", (held[1], held[0]))


def _spend_lease(db: sqlite3.Connection, key_id: str, instance: str, amount: int) -> int:
    """Take up to ``amount`` out of a lease; how much it held of it."""
    row = db.execute("SELECT amount FROM leases WHERE key_id = ? AND instance = ?",
                     (key_id, instance)).fetchone()
    spent = min(amount, row[0]) if row is not None else 0
    if spent:
        db.execute("UPDATE leases SET amount = amount - ? WHERE key_id = ? AND instance = ?",
                   (spent, key_id, instance))
    return spent


def _take_in(db: sqlite3.Connection, batch: Sequence[LeaseTake]) -> list[int]:
    granted = []
    for take in batch:
        row = db.execute("SELECT balance FROM api_keys WHERE id = ? AND revoked = 0 "
                         "AND balance IS NOT NULL", (take.key_id,)).fetchone()
        amount = lease_grant(row[0], take) if row is not None else 0
        if amount:
            db.execute("UPDATE api_keys SET balance = balance - ? WHERE id = ?",
                       (amount, take.key_id))
            db.execute("INSERT INTO leases (key_id, instance, amount) VALUES (?, ?, ?) "
                       "ON CONFLICT (key_id, instance) DO UPDATE SET "
                       "amount = amount + excluded.amount", (take.key_id, take.instance, amount))
        granted.append(amount)
    return granted


def _return_in(db: sqlite3.Connection, batch: Sequence[LeaseReturn]) -> None:
    for item in batch:
        row = db.execute("SELECT amount FROM leases WHERE key_id = ? AND instance = ?",
                         (item.key_id, item.instance)).fetchone()
        if row is None:
            continue
        back = row[0] if item.amount is None else min(item.amount, row[0])
        if item.amount is None:
            db.execute("DELETE FROM leases WHERE key_id = ? AND instance = ?",
                       (item.key_id, item.instance))
        else:
            db.execute("UPDATE leases SET amount = amount - ? WHERE key_id = ? AND instance = ?",
                       (back, item.key_id, item.instance))
        if back:
            db.execute("UPDATE api_keys SET balance = balance + ? "
                       "WHERE id = ? AND balance IS NOT NULL", (back, item.key_id))


# SQLite's primary result codes in words a client or an operator can act on.
_ERRORS = {
    "SQLITE_BUSY": "the database is locked by another process",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_READONLY": "the database is read-only",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk I/O error",
    "SQLITE_CORRUPT": "the database file is damaged",
    "SQLITE_NOTADB": "the file is not a database",
}


def _describe(exc: BaseException) -> str:
    """What went wrong, in words: never a Python class name (that goes to the log)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if isinstance(exc, PermissionError):
        cause = "permission denied"
    elif isinstance(exc, OSError):
        cause = exc.strerror.lower() if exc.strerror else "the file cannot be opened"
    elif isinstance(exc, ValueError | OverflowError | TypeError):
        cause = "a value the database cannot hold"
    else:
        primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
        cause = _ERRORS.get(primary, "a database error")
    log.debug("store error: %s", cause, extra={"error": type(exc).__name__,
                                               "sqlite_error": name or None})
    return f"the store is unavailable: {cause}"


def _migrate(db: sqlite3.Connection) -> tuple[int, int]:
    db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
    try:
        before = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[before:], start=before + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return before, max(before, len(MIGRATIONS))


# A key's balance as read: what it may still spend, the credit leased to processes included.
_LEASED = "(SELECT coalesce(sum(amount), 0) FROM leases WHERE key_id = api_keys.id)"
_SELECT_KEY = "SELECT " + ", ".join(
    f"balance + {_LEASED}" if name == "balance" else name for name in KEY_FIELDS
) + " FROM api_keys"


def _find_key(db: sqlite3.Connection, key_id: str) -> ApiKey | None:
    row = db.execute(f"{_SELECT_KEY} WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else _key(row)


def _key_value(name: str, value: Any) -> Any:
    if name == "models":
        return models_to_text(value)
    if name in _BOOL_KEY:
        return int(value)
    return value


def _key_row(key: ApiKey) -> tuple[Any, ...]:
    return tuple(_key_value(name, getattr(key, name)) for name in KEY_FIELDS)


def _key(row: tuple[Any, ...]) -> ApiKey:
    values = dict(zip(KEY_FIELDS, row, strict=True))
    values["revoked"] = bool(values["revoked"])
    values["models"] = models_from_text(values["models"])
    return ApiKey(**values)


def _record(row: tuple[Any, ...]) -> RequestRecord:
    values = dict(zip(RECORD_FIELDS, row, strict=True))
    for flag in _BOOL_RECORD:
        values[flag] = bool(values[flag])
    return RequestRecord(**values)


def _reservation(row: tuple[Any, ...]) -> Reservation:
    values = dict(zip(RESERVATION_FIELDS, row, strict=True))
    values["stream"] = bool(values["stream"])
    return Reservation(**values)
