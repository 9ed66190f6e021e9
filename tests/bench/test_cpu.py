"""Reading CPU time from /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.bench.cpu import parse_stat, tree_cpu_seconds


def stat_line(pid: int, name: str, ppid: int, times: tuple[int, int, int, int]) -> str:
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(t) for t in times] + ["20", "0", "1"]
    return f"{pid} ({name}) {' '.join(fields)}\n"


def test_parse_stat_reads_past_odd_names() -> None:
    stat = parse_stat(stat_line(42, "we ird) (name", 7, (10, 20, 3, 4)))
    assert (stat.pid, stat.ppid, stat.ticks) == (42, 7, 37)
    with pytest.raises(ValueError):
        parse_stat("garbage")


def test_tree_adds_descendants_only(tmp_path: Path) -> None:
    for pid, ppid, ticks in [(1, 0, 1000), (10, 1, 100), (11, 10, 20), (12, 11, 3), (20, 1, 7)]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "p", ppid, (ticks, 0, 0, 0)))
    (tmp_path / "self").mkdir()
    (tmp_path / "30").mkdir()  # a process that vanished: no stat file
    hz = os.sysconf("SC_CLK_TCK")
    assert tree_cpu_seconds(10, tmp_path) == pytest.approx(123 / hz)
    with pytest.raises(ProcessLookupError):
        tree_cpu_seconds(99, tmp_path)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_own_process_tree_grows_with_work() -> None:
    before = tree_cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:  # bounded busy loop: 50 ms of CPU
        pass
    assert tree_cpu_seconds(os.getpid()) > before
