"""CPU time of a process and its descendants, read from ``/proc`` (Linux).

Used to charge the gateway (``--gateway-pid``) for the requests of a run: sample before and
after, divide the difference by the requests.

Rules:
- ``parse_stat`` is pure (the text of ``/proc/PID/stat`` in, numbers out) and reads the
  command name by its last ``)``, since a name may hold spaces and parentheses.
- A process counts with ``utime + stime + cutime + cstime``: a child that exits during the
  run and is reaped moves its time into its parent's ``cutime``/``cstime``, so the sum stays
  continuous. Descendants are found by ``ppid`` in one scan of ``/proc``.
- Processes vanish while they are read: a missing or unreadable file just drops that process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs

__all__ = ["ProcStat", "parse_stat", "tree_cpu_seconds"]

_PROC: Final = Path("/proc")


@attrs.frozen
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime, in clock ticks


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line. Raises ``ValueError`` if it is not one."""
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 1 or close_paren < open_paren:
        raise ValueError("not a /proc/PID/stat line")
    fields = text[close_paren + 2 :].split()
    # After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17),
    # numbered as in proc(5); fields[0] is field 3.
    if len(fields) < 15:
        raise ValueError("short /proc/PID/stat line")
    pid = int(text[:open_paren])
    ppid = int(fields[1])
    ticks = sum(int(value) for value in fields[11:15])
    return ProcStat(pid, ppid, ticks)


def _all_stats(proc: Path) -> Iterator[ProcStat]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield parse_stat((entry / "stat").read_text())
        except (OSError, ValueError):
            continue  # gone, or unreadable: it ends the run uncounted


def tree_cpu_seconds(pid: int, proc: Path = _PROC) -> float:
    """CPU seconds used so far by ``pid`` and all its descendants.

    Raises ``ProcessLookupError`` if ``pid`` does not exist."""
    stats = {stat.pid: stat for stat in _all_stats(proc)}
    if pid not in stats:
        raise ProcessLookupError(pid)
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total, todo, seen = 0, [pid], set()
    while todo:  # bounded: each pid is visited once
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += stats[current].ticks
        todo.extend(children.get(current, ()))
    return total / os.sysconf("SC_CLK_TCK")
