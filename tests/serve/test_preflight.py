"""``arouter serve`` where it cannot serve: a port already taken, a store that does not answer.

Each runs the real command as a subprocess against real sockets and a real PostgreSQL, as a
newcomer would, and checks what they would read: exit status 1, one line on stderr that
names the address or the store and the cause, no traceback, no "listening" banner, no
secret; and that a failed start created no key, so the next start still prints the first.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import psycopg
import pytest
import trio

from tests.support.pg_server import private_server
from tests.support.processes import ROOT, ARouter, env, free_port, serve

PASSWORD = "s3cret-CANARY-pw"


async def arouter(data_dir: Path, *args: str, prefix: tuple[str, ...] = (),
                  **extra_env: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        result = await trio.run_process([*prefix, *ARouter, *args], capture_stdout=True,
                                        capture_stderr=True, check=False,
                                        env=env(data_dir, **extra_env), cwd=ROOT)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def one_clear_line(code: int, out: str, err: str) -> str:
    """The failed start's one line, after checking what must not be there."""
    assert code == 1, (out, err)
    assert "Traceback" not in err and "Exception" not in err, err
    assert "listening" not in out and "lr_live_" not in out, out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("arouter: "), err
    return lines[0]


async def no_key_was_created(data_dir: Path) -> None:
    code, out, err = await arouter(data_dir, "keys", "list")
    assert (code, out) == (0, "no keys (arouter keys create --name NAME makes one)\n"), err


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_taken_port_is_named_with_its_holder_and_loses_no_key(
    tmp_path: Path, workers: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_clear_line(*await arouter(tmp_path, "serve", "--port", str(port),
                                             "--workers", workers))
    assert line.startswith(f"arouter: cannot listen on 127.0.0.1:{port}: the address is "
                           f"already in use, by PID {os.getpid()} (")
    suggested = re.search(r"arouter serve --port (\d+) \(free now\)$", line)
    assert suggested is not None and int(suggested.group(1)) != port, line
    await no_key_was_created(tmp_path)
    # The first key is still to come: the next start that listens creates and prints it.
    async with serve(tmp_path) as served:
        assert served.key is not None


async def test_a_port_held_by_another_arouter_says_so(tmp_path: Path) -> None:
    async with serve(tmp_path / "first") as first:
        port = first.url.rsplit(":", 1)[1]
        line = one_clear_line(*await arouter(tmp_path / "second", "serve", "--port", port))
        assert f"already in use, by PID {first.process.pid} (another arouter)" in line


@pytest.mark.parametrize("options", [(), ("--workers", "2"), ("--no-first-key",)])
async def test_an_unreachable_postgresql_is_named_without_its_password(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://arouter:{PASSWORD}@127.0.0.1:{port}/arouter"
    code, out, err = await arouter(tmp_path, "serve", "--port", "0", *options,
                                   AROUTER_DATABASE_URL=url)
    line = one_clear_line(code, out, err)
    assert line == (
        f"arouter: cannot open the store postgresql://arouter@127.0.0.1:{port}/arouter "
        f"(AROUTER_DATABASE_URL): nothing listens on 127.0.0.1:{port} (connection refused). "
        "Is PostgreSQL running there? Check the host and port in the URL")
    assert PASSWORD not in out + err
    # The other commands that open the store explain it the same way.
    for command in (("keys", "list"), ("db", "migrate")):
        code, out, err = await arouter(tmp_path, *command, AROUTER_DATABASE_URL=url)
        assert one_clear_line(code, out, err) == line


async def test_postgresql_refusals_say_which_and_what_to_do(tmp_path: Path) -> None:
    with private_server() as server:
        address = f"127.0.0.1:{server.port}"
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE ROLE pwuser LOGIN PASSWORD '{PASSWORD}'")
            # pwuser must give its password; every other role is trusted, as before.
            assert server.root is not None
            hba = server.root / "data" / "pg_hba.conf"
            hba.write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        cases = {
            f"postgresql://pwuser:wrong-{PASSWORD}@{address}/postgres":
                "authentication failed for user 'pwuser': check the password in "
                "AROUTER_DATABASE_URL",
            f"postgresql://pwuser@{address}/postgres":
                "the server wants a password for 'pwuser'; AROUTER_DATABASE_URL gives none",
            f"postgresql://postgres@{address}/nosuchdb":
                "the database 'nosuchdb' does not exist. Create it (sudo -u postgres createdb "
                "--owner postgres nosuchdb) or fix the name in AROUTER_DATABASE_URL",
            f"postgresql://ghost@{address}/postgres":
                "the role 'ghost' does not exist on the server. Create it (sudo -u postgres "
                "createuser --pwprompt ghost) or fix the user in AROUTER_DATABASE_URL",
            # The right password, but no right to create the gateway's tables (PostgreSQL
            # 15 and later: only the database's owner may create in "public").
            f"postgresql://pwuser:{PASSWORD}@{address}/postgres":
                "the role 'pwuser' may not create the gateway's tables in schema 'public' of "
                "'postgres'. Make it the database's owner (ALTER DATABASE postgres OWNER TO "
                "pwuser) or GRANT CREATE ON SCHEMA public TO pwuser",
        }
        for url, cause in cases.items():
            code, out, err = await arouter(tmp_path, "serve", "--port", "0",
                                           AROUTER_DATABASE_URL=url)
            line = one_clear_line(code, out, err)
            assert line.endswith(f"(AROUTER_DATABASE_URL): {cause}"), line
            assert PASSWORD not in line


async def test_the_banner_names_the_postgresql_store_in_use(tmp_path: Path) -> None:
    with private_server() as server:
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{server.port}/postgres"  # trusted
        log = tmp_path / "stderr.log"
        async with serve(tmp_path, log, extra_env={"AROUTER_DATABASE_URL": url}) as served:
            assert (f"(store: postgresql://postgres@127.0.0.1:{server.port}/postgres)"
                    in served.banner)
            assert PASSWORD not in served.banner and str(tmp_path) not in served.banner
        assert PASSWORD not in log.read_text()


async def test_sqlite_that_cannot_be_written_is_named_with_the_reason(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # Root writes anywhere: without these capabilities, its permissions are checked as
        # anyone's.
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) runs root without DAC override"
        dropped = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--inh-caps={dropped}", f"--bounding-set={dropped}")
    line = one_clear_line(*await arouter(tmp_path, "serve", "--port", "0", "--data-dir",
                                         str(locked / "data"), prefix=prefix))
    assert line.startswith(f"arouter: cannot open the store SQLite {locked}/data/arouter.db: "
                           f"permission denied on {locked}/data for user ")
    assert line.endswith("choose a writable data directory (--data-dir or AROUTER_DATA_DIR)")

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    line = one_clear_line(*await arouter(tmp_path, "serve", "--port", "0", "--data-dir",
                                         str(a_file / "data")))
    assert line == (f"arouter: cannot open the store SQLite {a_file}/data/arouter.db: {a_file} "
                    "is a file, not a directory: choose a writable data directory (--data-dir "
                    "or AROUTER_DATA_DIR)")


async def test_a_store_lost_after_the_preflight_is_still_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app's own startup fails (the store went away between the pre-flight and the
    serve): the same one line, and no banner, although hypercorn reports "started"."""
    from gateway import cli
    from gateway.config import Config
    from gateway.serve import preflight

    url = f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db"
    config = Config(port=0, data_dir=tmp_path, database_url=url)
    hconfig, sockets = preflight.listen(config)
    try:
        with pytest.raises(preflight.CannotStart) as failed:
            await cli._serve(config, True, hconfig, sockets, "hint")
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()
    assert str(failed.value).endswith("(connection refused). Is PostgreSQL running there? "
                                      "Check the host and port in the URL")
    assert PASSWORD not in str(failed.value)
    assert "listening" not in capsys.readouterr().out
