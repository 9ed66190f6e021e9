"""The settlement outbox: ledger rows the store refused, kept on disk until it takes them.

When a settlement batch fails (the database is down, locked past its timeout), its rows go
to a file of this process (``<data_dir>/outbox/<instance>.jsonl``, one JSON object per row,
flushed and fsynced) as well as to the in-memory retry list. The upkeep retries them; a row
leaves the file once the store has it. A process that dies with rows in its file leaves them
for the next start on that host, which replays every outbox file *before* reconciling dead
instances, so the real usage wins over an ``interrupted`` estimate (settling is idempotent:
the first settlement of a generation stands, and a replay of one already written changes
nothing).

Rules: blocking file I/O runs in a worker thread; a process only ever rewrites or removes
its own file, except files of instances the store no longer lists (dead and reconciled).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from gateway.store.files import private_folder
from gateway.store.rows import RequestRecord, Settlement

log = logging.getLogger("arouter.outbox")


class Outbox:
    def __init__(self, folder: Path, instance: str) -> None:
        self.folder = folder
        self.path = folder / f"{instance}.jsonl"

    async def append(self, settlements: Iterable[Settlement]) -> None:
        lines = "".join(_line(s) for s in settlements)
        if lines:
            await trio.to_thread.run_sync(self._append, lines)

    def _append(self, lines: str) -> None:
        private_folder(self.folder)
        # Usage and key ids: for this user's eyes only.
        with open(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a",
                  encoding="utf-8") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())

    async def keep_only(self, settlements: list[Settlement]) -> None:
        """Rewrite this process's file to hold exactly ``settlements`` (atomically)."""
        await trio.to_thread.run_sync(self._rewrite, self.path, settlements)

    @staticmethod
    def _rewrite(path: Path, settlements: list[Settlement]) -> None:
        if not settlements:
            path.unlink(missing_ok=True)
            return
        temporary = path.with_suffix(".tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as file:
            for settlement in settlements:
                file.write(_line(settlement))
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)

    async def files(self) -> dict[Path, list[Settlement]]:
        """Every outbox file in the folder (any instance's) and the rows it holds."""
        return await trio.to_thread.run_sync(self._read_all)

    def _read_all(self) -> dict[Path, list[Settlement]]:
        found: dict[Path, list[Settlement]] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("*.jsonl")):
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    fields = json.loads(line)
                    lease = fields.pop("lease", "")  # absent in files of older versions
                    rows.append(Settlement(RequestRecord(**fields), lease=lease))
                except (ValueError, TypeError):
                    # A torn last line (the process died mid-write) or a damaged file: the
                    # reservation behind it is reconciled as interrupted instead.
                    log.warning("skipped an unreadable outbox line",
                                extra={"file": str(path), "line": number})
            found[path] = rows
        return found

    async def remove(self, path: Path) -> None:
        await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


def _line(settlement: Settlement) -> str:
    """One row: the record's fields, and the lease that pays for it if any."""
    fields = attrs.asdict(settlement.record)
    if settlement.lease:
        fields["lease"] = settlement.lease
    return json.dumps(fields) + "\n"
