"""``arouter bench`` as a person runs it: options, a fake upstream in its own process, files."""

from __future__ import annotations

import argparse
import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.bench import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim_process() -> Iterator[tuple[str, int]]:
    """``arouter sim`` on a free loopback port, in a child process: (url, pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.sim.server", "--port", "0", "--tokens", "3"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "the fake upstream did not start within 10 s"
        line = proc.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_run_from_the_command_line(
    sim_process: tuple[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, pid = sim_process
    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    code = cli.main([
        "--url", url, "--model", "fake/lorem", "-n", "30", "-c", "5", "--interval-ms", "1",
        "--abort-fraction", "0.4", "--abort-random-ms", "1:4", "--sim-url", url,
        "--gateway-pid", str(pid), "--json", str(json_path), "--html", str(html_path),
        "--progress", "--run-id", "clitest",
    ])
    out, err = capsys.readouterr()
    assert code == 0
    assert "arouter bench  run clitest" in out and "cancel propagation" in out
    assert "30/30" in err  # the progress line's last state
    data = json.loads(json_path.read_text())
    [target] = data["targets"]
    # 12 planned aborts; a 3-token stream may finish before its abort time comes.
    assert target["requests"] == 30 and 0 < target["aborted"] <= 12
    assert target["completed"] + target["aborted"] == 30
    assert target["tokens"] >= target["completed"] * 3
    assert target["gateway_cpu_ms_per_request"] is not None
    assert target["propagation"]["never_cancelled"] == 0
    assert {r["tag"] for r in data["requests"]} == {f"clitest-{i}" for i in range(30)}
    assert "<svg" in html_path.read_text()


def test_nothing_measured_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on the loopback: nothing listens, every connect is refused at once.
    code = cli.main(["--url", "http://127.0.0.1:1", "-n", "3", "-c", "1"])
    assert code == 1
    assert "connect ECONNREFUSED x3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--abort-fraction", "2", "--abort-at-ms", "5"],
        ["--abort-at-ms", "5", "--abort-random-ms", "1:2"],
        ["--abort-random-ms", "5:1"],
        ["--url", "ftp://127.0.0.1"],
        ["--requests", "0"],
    ],
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_an_abort_fraction_needs_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--abort-fraction", "0.5"]) == 2
    assert "--abort-at-ms or --abort-random-ms" in capsys.readouterr().err


def test_mounts_as_a_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AROUTER_KEY", "sk-from-env")
    parser = argparse.ArgumentParser(prog="arouter")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_arguments(sub.add_parser("bench"))
    args = parser.parse_args(["bench", "--no-stream", "-n", "5", "--compare", "http://localhost:9"])
    assert (args.command, args.stream, args.requests) == ("bench", False, 5)
    assert args.model == "sim/lorem"
    assert args.compare == "http://localhost:9" and args.key is None
