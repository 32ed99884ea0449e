"""A throwaway PostgreSQL server for tests (and ``scripts/pg_dev.sh``).

``start_pg_server()`` initialises a fresh cluster in a new temporary directory, starts ``postgres`` on a free
TCP port bound to 127.0.0.1 (plus a private Unix socket), creates a password role and the databases
``dagster`` and ``mlflow`` owned by it, waits until the role can log in over TCP, and yields a
:class:`PgServer` with the connection details. On exit — also when the body raised — the server is stopped
with ``pg_ctl stop -m immediate``, the postmaster is reaped (SIGKILL as a last resort) and the directory is
removed. The postmaster is started with a parent-death signal (``setpriv --pdeathsig``), so even a test
process killed with SIGKILL leaves no server behind — note that this ties the server to the *thread* that
started it (start it from the main thread, as pytest fixtures are); directories left by such a hard kill are
swept on the next start.

The server binaries come from ``$RDTF_PG_BIN`` (a ``bin`` directory), the newest
``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu package, installed by ``scripts/system_deps.sh``), or
``initdb`` on ``PATH``. PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` system
user (created by the Debian package), falling back to ``nobody``.

Use the ``pg_server`` fixture (session scope; skips with a reason when no server binaries are found) or
the context manager directly::

    with start_pg_server() as pg:
        pg.url("mlflow")      # postgresql+psycopg2://rdtf:...@127.0.0.1:PORT/mlflow
        pg.dagster_env()      # DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

_PREFIX = "rdtf-pg-"
SYSTEM_DEPS_HINT = "install them with `bash scripts/system_deps.sh` (Debian package `postgresql`)"
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
_PG_ENV = ("PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE",
           "PGSERVICEFILE", "PGPASSFILE", "PGSSLMODE", "PGOPTIONS")


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""

    def ok(d: Path) -> bool:
        return all(os.access(d / b, os.X_OK) for b in _SERVER_BINARIES)

    if os.environ.get("RDTF_PG_BIN"):
        d = Path(os.environ["RDTF_PG_BIN"])
        return d if ok(d) else None

    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.name)) or (0,)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if ok(Path(d)):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and ok(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: the current user, or (as root) ``postgres``/``nobody``; None if none."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in (os.environ.get("RDTF_PG_OS_USER"), "postgres", "nobody"):
        if not name:
            continue
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


def unavailable_reason() -> str | None:
    """Why no test server can be started here (None if it can)."""
    if find_pg_bin() is None:
        return f"PostgreSQL server binaries ({', '.join(_SERVER_BINARIES)}) not found; {SYSTEM_DEPS_HINT}"
    if _server_account() is None:
        return "running as root and no `postgres` or `nobody` account to run PostgreSQL as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (a project dependency: psycopg2-binary)"
    return None


@dataclass
class PgServer:
    """Connection details of a running test server."""

    host: str
    port: int
    user: str  # password role owning the databases
    password: str
    databases: tuple[str, ...]
    base_dir: Path  # everything of this server lives under here (removed on stop)
    data_dir: Path
    socket_dir: Path
    log_file: Path
    bin_dir: Path
    pid: int  # postmaster
    version: str = ""
    superuser: str = "postgres"  # trust-authenticated over the private Unix socket only
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, db: str = "mlflow", driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL (user and password URL-encoded), e.g. an MLflow tracking URI."""
        return f"{driver}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{db}"

    def dsn(self, db: str = "dagster") -> dict:
        """Keyword arguments for ``psycopg2.connect`` (TCP, password auth)."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "dbname": db,
                "connect_timeout": 5}

    def connect(self, db: str = "dagster"):
        import psycopg2

        return psycopg2.connect(**self.dsn(db))

    def query(self, db: str, sql: str, params: tuple | dict | None = None) -> list[tuple]:
        """Run one statement as the password role and return its rows (autocommit)."""
        conn = self.connect(db)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def dagster_env(self, db: str = "dagster") -> dict[str, str]:
        """The variables ``deploy/postgres/dagster.yaml`` reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": db}

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class _Runner:
    """Runs server binaries as the server account (dropping root), in a clean environment."""

    def __init__(self, bin_dir: Path, account: pwd.struct_passwd, cwd: Path):
        self.bin_dir, self.account, self.cwd = bin_dir, account, cwd
        self.drop_root = os.geteuid() == 0 and account.pw_uid != 0
        env = {k: v for k, v in os.environ.items() if k not in _PG_ENV and not k.startswith("LC_")}
        env |= {"LANG": "C", "LC_ALL": "C", "HOME": str(cwd), "TZ": "UTC"}
        self.env = env
        self.setpriv = shutil.which("setpriv")

    def _creds(self) -> dict:
        if not self.drop_root:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def run(self, binary: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / binary), *args]
        return subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **self._creds())

    def popen(self, binary: str, *args: str, log) -> subprocess.Popen:
        cmd = [str(self.bin_dir / binary), *args]
        if self.setpriv:  # the server dies with the thread that started it, even on SIGKILL of the tests
            cmd = [self.setpriv, "--pdeathsig", "KILL", "--", *cmd]
        return subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, **self._creds())


def _wait_ready(server: PgServer, proc: subprocess.Popen, timeout: float) -> None:
    """Until the server accepts connections on its socket (the TCP/password path is checked after provisioning)."""
    import psycopg2

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with code {proc.returncode}:\n{_tail(server.log_file)}")
        try:
            psycopg2.connect(host=str(server.socket_dir), port=server.port, user=server.superuser,
                             dbname="postgres", connect_timeout=2).close()
            return
        except psycopg2.OperationalError as e:  # starting up / not listening yet
            last = e
            time.sleep(0.1)
    raise TimeoutError(f"postgres not ready after {timeout:.0f}s ({last}):\n{_tail(server.log_file)}")


def _provision(server: PgServer) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user=server.superuser, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            server.version = cur.fetchone()[0]
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(server.user)),
                        (server.password,))
            for db in server.databases:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(db), sql.Identifier(server.user)))
    finally:
        conn.close()
    # the clients' path: TCP on 127.0.0.1 with SCRAM password authentication
    deadline = time.monotonic() + 10
    while True:
        try:
            server.query(server.databases[0] if server.databases else "postgres", "SELECT 1")
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_pg_server(server: PgServer, runner: _Runner | None = None, remove: bool = True) -> None:
    """``pg_ctl stop -m immediate``; reap (or SIGKILL) the postmaster; remove the directory. Idempotent."""
    proc = server._proc
    if proc is not None and proc.poll() is None:
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.run("pg_ctl", "stop", "-D", str(server.data_dir), "-m", "immediate", "-w", "-t", "15",
                           timeout=30)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)  # backends notice the postmaster's death and exit
            proc.wait(timeout=15)
    if remove:
        shutil.rmtree(server.base_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _sweep_stale(parent: Path) -> None:
    """Remove server dirs left by test processes that were killed hard (their server died with them)."""
    for d in parent.glob(f"{_PREFIX}*"):
        try:
            pidfile = d / "data" / "postmaster.pid"
            if pidfile.exists():
                stale = not _pid_alive(int(pidfile.read_text().split()[0]))
            else:  # never started, or stopped without removing its dir
                stale = time.time() - d.stat().st_mtime > 6 * 3600
        except (OSError, ValueError, IndexError):
            continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)


def _base_dir(account: pwd.struct_passwd) -> Path:
    # Short path (Unix socket names are limited to ~107 bytes) that the server account can traverse:
    # pytest's tmp dirs are 0700 and owned by the test user, so they cannot be used when dropping root.
    tmp = tempfile.gettempdir()
    parent = Path("/tmp" if (os.geteuid() == 0 or len(tmp) > 40) and os.path.isdir("/tmp") else tmp)
    with contextlib.suppress(OSError):
        _sweep_stale(parent)
    base = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
    if os.geteuid() == 0 and account.pw_uid != 0:
        os.chown(base, account.pw_uid, account.pw_gid)
    return base


@contextlib.contextmanager
def start_pg_server(user: str = "rdtf", password: str | None = None,
                    databases: tuple[str, ...] = ("dagster", "mlflow"), timeout: float = 60,
                    keep: bool = False) -> Iterator[PgServer]:
    """Start a throwaway server; see the module docstring. ``keep`` leaves the directory (not the server)."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir, account = find_pg_bin(), _server_account()
    assert bin_dir is not None and account is not None
    # characters that must be URL-encoded, so URL building is exercised (no '/': dagster-postgres keeps it raw)
    password = password or f"pw-{secrets.token_hex(8)}@:%"
    base = _base_dir(account)
    runner = _Runner(bin_dir, account, base)
    data, sock, log = base / "data", base / "sock", base / "postgres.log"
    server = None
    try:
        sock.mkdir(mode=0o700)
        log.touch()
        if runner.drop_root:
            for p in (sock, log):
                os.chown(p, account.pw_uid, account.pw_gid)
        r = runner.run("initdb", "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync",
                       "--auth-local=trust", "--auth-host=scram-sha-256", timeout=max(timeout, 120))
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        with open(data / "postgresql.conf", "a") as f:  # throwaway data: durability off, small footprint
            f.write("\n# rdtf test server\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{sock}'\nunix_socket_permissions = 0700\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "shared_buffers = 32MB\nmax_connections = 100\nlogging_collector = off\n"
                    "log_min_messages = warning\n")
        for attempt in range(5):  # the free port may be taken between probing and binding
            port = _free_port()
            with open(log, "ab") as lf:
                proc = runner.popen("postgres", "-D", str(data), "-p", str(port), log=lf)
            server = PgServer(host="127.0.0.1", port=port, user=user, password=password, databases=tuple(databases),
                              base_dir=base, data_dir=data, socket_dir=sock, log_file=log, bin_dir=bin_dir,
                              pid=proc.pid, _proc=proc)
            on_exit = functools.partial(stop_pg_server, server, runner, not keep)
            atexit.register(on_exit)  # last resort if the interpreter exits without running our finally
            try:
                _wait_ready(server, proc, timeout)
                break
            except RuntimeError:
                recent = _tail(log, 10).lower()
                if attempt < 4 and ("could not bind" in recent or "in use" in recent):
                    atexit.unregister(on_exit)
                    stop_pg_server(server, runner, remove=False)
                    log.write_bytes(b"")
                    continue
                raise
        assert server is not None
        _provision(server)
    except BaseException:
        if server is not None:
            print(f"postgres log ({log}):\n{_tail(log)}", file=sys.stderr)
            atexit.unregister(on_exit)
            stop_pg_server(server, runner, remove=not keep)
        elif not keep:
            shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        stop_pg_server(server, runner, remove=not keep)
        atexit.unregister(on_exit)


def pg_server_fixture():
    """Generator body for a pytest fixture: skips (naming scripts/system_deps.sh) when PostgreSQL is missing."""
    import pytest

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with start_pg_server() as server:
        yield server


try:
    import pytest as _pytest

    pg_server = _pytest.fixture(scope="session", name="pg_server")(pg_server_fixture)
except ImportError:  # used outside pytest (scripts/pg_dev.sh)
    pass


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.pg_server``: run a dev server until Ctrl-C, printing the environment to use."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--password", default=None, help="role password (default: random)")
    ap.add_argument("--env-file", default=None, help="also write the export lines to this file")
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"pg_dev: {reason}", file=sys.stderr)
        return 2
    with start_pg_server(password=args.password) as pg:
        lines = [f"export {k}='{v}'" for k, v in pg.dagster_env().items()]
        lines.append(f"export MLFLOW_TRACKING_URI='{pg.url('mlflow')}'")
        text = "\n".join(lines)
        print(f"# PostgreSQL {pg.version} on 127.0.0.1:{pg.port} (data: {pg.data_dir}); Ctrl-C stops and deletes it")
        print(text, flush=True)
        if args.env_file:
            Path(args.env_file).write_text(text + "\n")
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(1))
        while not stop and pg.is_running():
            time.sleep(0.5)
        if not pg.is_running():
            print(f"pg_dev: postgres exited:\n{_tail(pg.log_file)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
