"""Start and stop the project's web UIs for browser checks (tests/integration/test_ui_browser.py, scripts/screenshots.py).

Every server is bound to 127.0.0.1 on a free port, started in its own process group, waited on until it
answers HTTP, and on teardown its whole process group (plus any descendant that moved to another group) is
terminated, then killed. An ``atexit`` hook kills whatever is still registered if the interpreter exits early.

Headless Chromium is always the system one (``/usr/bin/chromium``, installed by ``scripts/system_deps.sh``);
Playwright is never allowed to download a browser.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "dagster-webserver").exists() \
    else PROJECT_ROOT / ".venv" / "bin"
CHROMIUM = os.environ.get("RDTF_CHROMIUM", "/usr/bin/chromium")
HOST = "127.0.0.1"
VIEWPORT = {"width": 1400, "height": 900}

_LIVE: dict[int, Server] = {}


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _proc_stats() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, pgrp, starttime) of every process, from /proc (empty where it is unavailable)."""
    out = {}
    if not Path("/proc").is_dir():
        return out
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(d)] = (f[0], int(f[1]), int(f[2]), int(f[19]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid: int, stats: dict | None = None) -> list[int]:
    """Every live descendant of ``pid``."""
    kids: dict[int, list[int]] = {}
    for child, (_, ppid, _, _) in (stats if stats is not None else _proc_stats()).items():
        kids.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class _Tree:
    """The processes of one server: its process group plus descendants that left it, each known by
    (pid, start time) so that a pid reused by an unrelated process is never signalled."""

    def __init__(self, leader: int, leader_start: int | None):
        self.pgid = leader  # start_new_session=True: the leader's pid is the group id
        self.known: dict[int, int] = {}  # pid -> starttime
        stats = _proc_stats()
        if leader in stats and stats[leader][3] != leader_start:
            return  # our whole group is gone and the pid was reused: nothing of ours is left
        if leader in stats:
            self.known[leader] = leader_start
        for p, (state, _, pgrp, st) in stats.items():  # the group (members may outlive the leader)
            if pgrp == self.pgid and state != "Z":
                self.known.setdefault(p, st)
        self.refresh()

    def alive(self, stats: dict | None = None) -> list[int]:
        stats = stats if stats is not None else _proc_stats()
        return [p for p, st in self.known.items() if p in stats and stats[p][3] == st and stats[p][0] != "Z"]

    def group_is_ours(self, stats: dict | None = None) -> bool:
        """True while a known member is still in the group (then the group id cannot have been reused)."""
        stats = stats if stats is not None else _proc_stats()
        return any(stats[p][2] == self.pgid for p in self.alive(stats))

    def refresh(self) -> None:
        """Learn processes started since: members of our (still ours) group and descendants of known ones."""
        stats = _proc_stats()
        for p in self.alive(stats):
            for d in descendants(p, stats):
                self.known.setdefault(d, stats[d][3])
        if self.group_is_ours(stats):
            for p, (state, _, pgrp, st) in stats.items():
                if pgrp == self.pgid and state != "Z":
                    self.known.setdefault(p, st)

    def signal(self, sig: int, leader_unreaped: bool) -> None:
        """``leader_unreaped``: the leader was not waited for yet, so its pid (= the group id) is ours."""
        stats = _proc_stats()
        if leader_unreaped or self.group_is_ours(stats):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
        for p in self.alive(stats):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)


@dataclass
class Server:
    """One started server process (leader of its own process group)."""

    name: str
    proc: subprocess.Popen
    url: str
    log_path: Path
    start_time: int | None = None  # the leader's /proc start time (identifies it against pid reuse)
    _stopped: bool = field(default=False, repr=False)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n"
                               f"{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group (and strays), wait up to ``grace`` s, then SIGKILL what is left."""
        stop_servers(self, grace=grace)


def stop_servers(*servers: Server, grace: float = 10.0) -> None:
    """Stop several servers at once: SIGTERM every process group (and every descendant that left it), wait
    up to ``grace`` s for all of them, then SIGKILL whatever is left and wait again. Idempotent."""
    todo = []
    for srv in servers:
        if srv is None or srv._stopped:
            continue
        srv._stopped = True
        _LIVE.pop(srv.proc.pid, None)
        todo.append((srv, _Tree(srv.proc.pid, srv.start_time)))

    def running(item) -> bool:
        srv, tree = item
        srv.proc.poll()  # reaps the leader
        return srv.proc.returncode is None or bool(tree.alive())

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pending = [it for it in todo if running(it)]
        if not pending:
            break
        for srv, tree in pending:
            tree.refresh()  # children started meanwhile (e.g. during shutdown)
            tree.signal(sig, leader_unreaped=srv.proc.poll() is None)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(running(it) for it in pending):
            time.sleep(0.1)
    for srv, _ in todo:
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.proc.wait(timeout=1)


def _stop_all() -> None:
    stop_servers(*_LIVE.values(), grace=3.0)


atexit.register(_stop_all)


def start(name: str, cmd: list[str], *, url: str, log_dir: Path, env: Mapping[str, str] | None = None,
          cwd: Path = PROJECT_ROOT) -> Server:
    """Start ``cmd`` in a new session (own process group), output to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=dict(env if env is not None else os.environ),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stat = _proc_stats().get(proc.pid)  # not reaped yet, so this is our process
    srv = Server(name, proc, url, log_path, start_time=stat[3] if stat else None)
    _LIVE[proc.pid] = srv
    return srv


def wait_http(srv: Server, path: str = "/", *, timeout: float = 120.0, ok=(200,)) -> None:
    """Poll ``srv.url + path`` until it answers with a status in ``ok`` (fail fast if the process dies)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        srv.check_alive()
        try:
            with urllib.request.urlopen(srv.url + path, timeout=5) as r:
                if r.status in ok:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = f"HTTP {e.code}"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.5)
    raise TimeoutError(f"{srv.name} not ready at {srv.url}{path} after {timeout:.0f}s ({last}); log:\n"
                       f"{srv.log_tail()}")


@contextlib.contextmanager
def running(srv: Server) -> Iterator[Server]:
    try:
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------- Dagster


def dagster_env(dagster_home: Path, rdtf_home: Path | None = None,
                base: Mapping[str, str] | None = None) -> dict:
    env = dict(base if base is not None else os.environ)
    env["DAGSTER_HOME"] = str(dagster_home)
    if rdtf_home is not None:
        env["RDTF_HOME"] = str(rdtf_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_dagster_webserver(env: Mapping[str, str], log_dir: Path, *, port: int | None = None,
                            timeout: float = 120.0) -> Server:
    """``dagster-webserver -h 127.0.0.1 -p PORT -w workspace.yaml``, ready once the code location loaded."""
    port = port or free_port()
    srv = start("dagster-webserver",
                [str(VENV_BIN / "dagster-webserver"), "-h", HOST, "-p", str(port), "-w", "workspace.yaml"],
                url=f"http://{HOST}:{port}", log_dir=log_dir, env=env)
    try:
        wait_http(srv, "/server_info", timeout=timeout)
        wait_code_location(srv, timeout=timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


def start_dagster_daemon(env: Mapping[str, str], log_dir: Path) -> Server:
    """``dagster-daemon run -w workspace.yaml`` (launches queued runs; evaluates sensors/schedules)."""
    return start("dagster-daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                 url="", log_dir=log_dir, env=env)


def graphql(srv: Server, query: str, variables: dict | None = None, *, timeout: float = 30.0) -> dict:
    """POST a GraphQL query to the Dagster webserver; raises on transport or GraphQL errors."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(srv.url + "/graphql", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    if out.get("errors"):
        raise RuntimeError(f"GraphQL errors: {out['errors']}")
    return out["data"]


LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name } }
                                     ... on PythonError { message } } } } } }
"""


def wait_code_location(srv: Server, *, timeout: float = 120.0) -> tuple[str, str]:
    """Wait until the workspace's code location has loaded; returns (location name, repository name)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        srv.check_alive()
        try:
            data = graphql(srv, LOCATIONS_QUERY)
        except (OSError, RuntimeError) as e:
            last = repr(e)
        else:
            entries = data["workspaceOrError"].get("locationEntries") or []
            for e in entries:
                loc = e.get("locationOrLoadError") or {}
                if loc.get("__typename") == "RepositoryLocation" and loc["repositories"]:
                    return loc["name"], loc["repositories"][0]["name"]
                if loc.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location {e['name']} failed to load: {loc['message']}")
            last = entries
        time.sleep(0.5)
    raise TimeoutError(f"code location not loaded after {timeout:.0f}s ({last}); log:\n{srv.log_tail()}")


def wait_run(srv: Server, run_id: str, *, timeout: float = 180.0, poll: float = 1.0) -> str:
    """Poll a Dagster run until it reaches a terminal status; returns the status."""
    q = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = graphql(srv, q, {"id": run_id})["runOrError"].get("status")
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")


# ---------------------------------------------------------------------------------------------- MLflow


def start_mlflow_server(backend_uri: str, artifacts_destination: Path, log_dir: Path, *,
                        port: int | None = None, env: Mapping[str, str] | None = None, timeout: float = 120.0,
                        wait: bool = True) -> Server:
    """``mlflow server`` on 127.0.0.1 (1 worker) serving ``backend_uri``.

    Artifacts of existing runs are read from their recorded (local) artifact URIs; new experiments created
    through this server would use the proxied ``mlflow-artifacts:/`` root stored in ``artifacts_destination``.
    With ``wait=False`` it returns at once (call ``wait_http(srv, "/health")`` before using it).
    """
    port = port or free_port()
    env = dict(env if env is not None else os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here; keep the UI from phoning home
    env.setdefault("DO_NOT_TRACK", "true")
    srv = start("mlflow-server",
                [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend_uri, "--host", HOST,
                 "--port", str(port), "--workers", "1", "--serve-artifacts",
                 "--artifacts-destination", str(artifacts_destination)],
                url=f"http://{HOST}:{port}", log_dir=log_dir, env=env)
    if wait:
        try:
            wait_http(srv, "/health", timeout=timeout)
        except BaseException:
            srv.stop()
            raise
    return srv


# --------------------------------------------------------------------------------------------- browser


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)


# MLflow 3.x UI: open experiments in the classic "Model training" view and keep the assistant panel closed.
MLFLOW_INIT_SCRIPT = """
try {
  localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
  localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
} catch (e) {}
"""


@contextlib.contextmanager
def browser_page(viewport: Mapping[str, int] = VIEWPORT, *, init_script: str | None = None) -> Iterator:
    """A Playwright page in headless system Chromium (never a downloaded browser)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                                           "--no-first-run", "--disable-extensions"])
        try:
            ctx = browser.new_context(viewport=dict(viewport), device_scale_factor=1)
            ctx.set_default_timeout(30_000)
            if init_script:
                ctx.add_init_script(init_script)
            yield ctx.new_page()
        finally:
            browser.close()


def wait_text(page, texts: str | list[str], *, timeout: float = 60.0) -> None:
    """Wait until every one of ``texts`` is part of the rendered page text (``document.body.innerText``)."""
    for t in [texts] if isinstance(texts, str) else texts:
        try:
            page.wait_for_function("t => document.body && document.body.innerText.includes(t)", arg=t,
                                   timeout=timeout * 1000, polling=250)
        except Exception as e:
            raise AssertionError(f"text {t!r} not shown at {page.url} within {timeout:.0f}s; page text:\n"
                                 f"{body_text(page)[:3000]}") from e


def goto(page, url: str, *, wait_for: str | list[str] | None = None, idle: float = 0.0,
         timeout: float = 60.0) -> None:
    """Open ``url``, wait for ``wait_for`` text(s) to be shown, then up to ``idle`` s for network quiet.

    A URL that differs from the current one only after ``#`` (MLflow's hash routes) is loaded as a fresh
    document, so that no state of the previous view leaks into the new one.
    """
    if "#" in url and page.url.split("#")[0] == url.split("#")[0]:
        page.goto("about:blank")
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    if wait_for:
        wait_text(page, wait_for, timeout=timeout)
    if idle > 0:
        with contextlib.suppress(Exception):
            page.wait_for_load_state("networkidle", timeout=idle * 1000)


def body_text(page) -> str:
    try:
        return page.inner_text("body")
    except Exception as e:  # page closed or navigating
        return f"<no page text: {e}>"


def screenshot(page, path: Path, *, full_page: bool = False, settle: float = 0.5, idle: float = 0.0) -> Path:
    """PNG of the viewport after up to ``idle`` s of network quiet and ``settle`` s for drawing."""
    if idle > 0:  # Dagster reaches network idle once its live data arrived; MLflow keeps polling (use 0)
        with contextlib.suppress(Exception):
            page.wait_for_load_state("networkidle", timeout=idle * 1000)
    time.sleep(settle)  # let charts/animations finish drawing
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def is_png(path: Path, min_bytes: int = 2000) -> bool:
    p = Path(path)
    return p.is_file() and p.stat().st_size >= min_bytes and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------- MLflow model serving


def start_model_server(model_uri: str, tracking_uri: str, log_dir: Path, *, port: int | None = None,
                       timeout: float = 180.0) -> Server:
    """``mlflow models serve -m <model_uri> --env-manager local`` on 127.0.0.1, waited on until ``/ping`` answers."""
    port = port or free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               PATH=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))  # it execs `uvicorn` from PATH
    srv = start("mlflow-models-serve",
                [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                 "-h", HOST, "-p", str(port), "-w", "1"],
                url=f"http://{HOST}:{port}", log_dir=log_dir, env=env)
    try:
        wait_http(srv, "/ping", timeout=timeout)
    except BaseException:
        srv.stop()
        raise
    return srv
