"""The ``agenticore`` command. Job commands talk to the REST API (``AGENTICORE_API_URL``);
``up``, ``serve`` and ``worker`` start the processes themselves.

Exit codes: 0 success, 1 a failed job or an unreachable API, 2 bad usage or a rejected request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from agenticore import logs, metrics, telemetry
from agenticore.apikeys import ApiKeyNotFound, KeyStore, Role, exposure_error
from agenticore.client import ApiError, ApiUnavailable, Client
from agenticore.config import Settings, get_settings
from agenticore.errors import ConfigurationError, InvalidRequest
from agenticore.files import atomic_write, private_dir
from agenticore.fleet import WorkerRegistry
from agenticore.jobs import JobStore
from agenticore.models import Job, JobStatus
from agenticore.monitoring import ensure_flower_auth, flower_command
from agenticore.repos import RepoCache

__all__ = ["app", "main"]

app = typer.Typer(
    name="agenticore",
    help="Run AI coding agents as supervised background jobs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

FINAL_STATES = {"succeeded", "failed", "cancelled", "timed_out", "dead"}
STATE_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
    "dead": "red",
}
WORKER_STYLE = {"online": "green", "busy": "cyan", "draining": "yellow"}
CELERY_QUEUE = "agenticore"
CLI_KEY_FILE = "cli.key"

ApiOption = Annotated[
    str | None, typer.Option("--api", envvar="AGENTICORE_API_URL", help="API base URL")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def main() -> None:
    # commands that log do so through logging's last-resort handler
    logs.install(log_format=_log_format())
    app()


def _log_format() -> str:
    try:
        return get_settings().log_format
    except ValueError:  # a bad setting: the command that reads it says what is wrong
        return "text"


# -- processes ---------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port (AGENTICORE_PORT)")] = None,
) -> None:
    """Run the REST API."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    if reason := exposure_error(settings, host):
        _fail(reason, code=2)
    _check_tracing()
    uvicorn.run("api.main:app", host=host, port=port or settings.port)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="parallel jobs (AGENTICORE_MAX_PARALLEL_JOBS)")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
) -> None:
    """Run a Celery worker that executes jobs."""
    settings = get_settings()
    _check_tracing()
    private_dir(settings.run_dir, home=settings.home)
    metrics.prepare_multiprocess_dir()  # pool processes count into it; the main one serves
    # JSON logs: no banner, the log is JSON lines only
    quiet = ["--quiet"] if settings.log_format == "json" else []
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.app", *quiet, "worker",
        "-l", loglevel,
        "-Q", CELERY_QUEUE,
        "-c", str(concurrency or settings.max_parallel_jobs),
        "-n", settings.worker_node_name(),
        "--pool", "prefork",
        "--pidfile", str(settings.worker_pidfile()),
    ]  # fmt: skip
    os.execv(sys.executable, argv)


@app.command()
def drain(
    timeout: Annotated[float, typer.Option(help="seconds to wait for running jobs")] = 300,
) -> None:
    """Stop this host's worker taking jobs, let its jobs finish, then stop it.

    Past the timeout the worker is stopped cold: its running jobs are handed back to the
    queue (their agents terminated, their work salvaged by the next attempt)."""
    settings = get_settings()
    name = settings.worker_node_name()
    pid = _worker_pid(settings.worker_pidfile())
    store = JobStore(settings)
    for job in _running_on(store, name):
        store.update(job.id, worker_state="draining")
    _celery_control("cancel_consumer", CELERY_QUEUE, "-d", name)
    WorkerRegistry(settings).set_state(name, "draining")
    console.print(f"{name}: draining; no new jobs")
    deadline = time.monotonic() + timeout
    while (busy := _running_on(store, name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if busy:
        console.print(f"{name}: {len(busy)} job(s) still running after {timeout:g}s; handing back")
    # SIGTERM: warm shutdown (nothing runs any more); SIGQUIT: cold, pool processes get SIGTERM
    os.kill(pid, signal.SIGQUIT if busy else signal.SIGTERM)
    _wait_gone(pid, timeout=60)
    console.print(f"{name}: stopped")


@app.command()
def flower(
    address: Annotated[
        str | None, typer.Option(help="bind address (AGENTICORE_FLOWER_HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (AGENTICORE_FLOWER_PORT, 5555)")] = None,
) -> None:
    """Run Flower, Celery's monitor: basic auth from FLOWER_BASIC_AUTH (or the one
    `agenticore up` made); loopback only without it."""
    if not _has_module("flower"):
        _fail('Flower is not installed: pip install "agenticore[flower]"', code=2)
    try:
        argv, env = flower_command(get_settings(), address, port)
    except InvalidRequest as exc:
        _fail(str(exc), code=2)
    os.execve(sys.executable, argv, env)


@app.command()
def up(
    flower: Annotated[bool, typer.Option(help="also start Flower if installed")] = True,
    port: Annotated[int | None, typer.Option(help="API port")] = None,
) -> None:
    """Start the API and one worker (and Flower) on this machine; Ctrl-C stops them."""
    settings = get_settings()
    port = port or settings.port
    me = [sys.executable, "-m", "agenticore.cli"]
    commands = {"api": [*me, "serve", "--port", str(port)], "worker": [*me, "worker"]}
    if reason := exposure_error(settings, settings.host):
        _fail(reason, code=2)
    _check_tracing()
    backend = (settings.redis_url and "redis") or f"embedded (no Redis) under {settings.home}"
    console.print(f"[bold]Agenticore[/] broker: {backend}")
    console.print(f"API: http://{settings.host}:{port}  (AGENTICORE_API_URL)")
    console.print(f"API key: {_ensure_cli_key(settings)}")
    if flower and _has_module("flower"):
        commands["flower"] = [*me, "flower"]  # the same checks as `agenticore flower`
        auth = ensure_flower_auth(settings)
        where = f"user and password in {auth}" if auth else "FLOWER_BASIC_AUTH"
        console.print(f"Flower: http://{settings.flower_host}:{settings.flower_port}  ({where})")
    children = {name: subprocess.Popen(argv) for name, argv in commands.items()}
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    dead = [name for name, child in children.items() if child.returncode not in (0, -15, None)]
    if dead and not stopping:
        _fail(f"{', '.join(dead)} exited unexpectedly", code=1)


# -- API keys ----------------------------------------------------------------------------

keys_app = typer.Typer(
    help="Manage API keys. Works on the key store directly (Redis or HOME/keys), like drain.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="who or what uses the key")],
    role: Annotated[str, typer.Option("--role", help="viewer | operator | admin")],
    as_json: JsonOption = False,
) -> None:
    """Create a key; it is printed once (the last line), and only its hash is stored."""
    record, key = _key_store_call(lambda store: store.create(name, role))
    if as_json:
        print(json.dumps({"id": record.id, "key": key}))
        return
    print(f"created key {record.id} ({record.name}, {record.role.value}); it is shown only now:")
    print(key)


@keys_app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """List keys (never their secrets)."""
    records = _key_store_call(lambda store: store.list())
    if as_json:
        _print_json([record.public() for record in records])
        return
    table = Table("id", "name", "role", "created", "revoked", box=None, header_style="bold")
    for r in records:
        revoked = r.revoked.isoformat(timespec="seconds") if r.revoked else "-"
        table.add_row(r.id, r.name, r.role.value, r.created.isoformat(timespec="seconds"), revoked)
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Revoke a key; API processes refuse it within API_KEY_CACHE_SECONDS."""
    settings = get_settings()
    record = _key_store_call(lambda store: store.revoke(key_id))
    console.print(
        f"revoked key {record.id} ({record.name}); the API refuses it within "
        f"{settings.api_key_cache_seconds:g}s"
    )


def _key_store_call(action: Any) -> Any:
    try:
        return action(KeyStore(get_settings()))
    except (InvalidRequest, ApiKeyNotFound) as exc:
        _fail(str(exc), code=2)
    except (OSError, redis.RedisError) as exc:
        _fail(f"cannot reach the key store: {exc}", code=1)


def _ensure_cli_key(settings: Settings) -> str:
    """An admin key for the local CLI in HOME/cli.key (0600), made the first time."""
    path = settings.home / CLI_KEY_FILE
    store = KeyStore(settings)
    if not path.exists():
        _, key = store.create("cli (agenticore up)", Role.ADMIN)
        atomic_write(path, key + "\n")  # mkstemp: 0600
        path.chmod(0o600)
        return f"admin key written to {path} (the CLI uses it; AGENTICORE_API_KEY overrides)"
    if settings.auth_disabled or store.verify(path.read_text().strip()) is not None:
        return f"{path} (AGENTICORE_API_KEY overrides)"
    return (
        f"[yellow]{path} is not a valid key for this store[/] (revoked, or made for another "
        "store); delete it and restart to get a new one"
    )


# -- jobs --------------------------------------------------------------------------------


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="what the agent should do")],
    repo: Annotated[str | None, typer.Option("--repo", help="repository URL")] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="base branch, tag or commit")] = None,
    profile: Annotated[str, typer.Option(help="agent profile")] = "default",
    model: Annotated[str | None, typer.Option(help="model override")] = None,
    session: Annotated[str | None, typer.Option("--session", help="resume this session")] = None,
    timeout: Annotated[int | None, typer.Option(help="wall-clock limit in seconds")] = None,
    priority: Annotated[
        str, typer.Option(help="interactive | normal | batch (Redis broker only)")
    ] = "normal",
    max_cost: Annotated[float | None, typer.Option(help="budget in USD")] = None,
    pr: Annotated[
        bool | None, typer.Option("--pr/--no-pr", help="open a pull request (default: profile)")
    ] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="PR label (repeatable)")
    ] = None,
    reviewers: Annotated[
        list[str] | None, typer.Option("--reviewer", help="PR reviewer, user or org/team")
    ] = None,
    draft: Annotated[
        bool | None, typer.Option("--draft/--ready", help="draft PR (default: config)")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the job (and its PR step) until it ends")
    ] = False,
    keep_worktree: Annotated[
        bool,
        typer.Option(
            "--keep-worktree", help="keep the job's worktree (its work is on the branch anyway)"
        ),
    ] = False,
    as_json: JsonOption = False,
    api: ApiOption = None,
) -> None:
    """Submit a job."""
    spec: dict[str, Any] = {"task": task, "profile": profile, "priority": priority}
    if keep_worktree:
        spec["keep_worktree"] = True
    optional = {
        "repo_url": repo,
        "base_ref": ref,
        "model": model,
        "session_id": session,
        "timeout_seconds": timeout,
        "max_cost_usd": max_cost,
        "auto_pr": pr,
        "pr_labels": labels or None,
        "pr_reviewers": reviewers or None,
        "pr_draft": draft,
    }
    spec |= {k: v for k, v in optional.items() if v is not None}
    client = _client(api)
    job = _call(client.submit, spec)
    if not wait:
        _print_json(job) if as_json else console.print(f"submitted job [bold]{job['id']}[/]")
        return
    job = _follow(client, job, quiet=as_json)
    if as_json:
        _print_json(job)
    else:
        _print_job(job)
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)


@app.command("jobs")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    as_json: JsonOption = False,
    api: ApiOption = None,
) -> None:
    """List jobs, newest first."""
    page = _call(_client(api).jobs, status=status, limit=limit, cursor=cursor)
    if as_json:
        _print_json(page)
        return
    wide = console.width >= 140
    table = Table(box=None, header_style="bold")
    table.add_column("id", no_wrap=True, min_width=36)  # whole: `agenticore job` takes it
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("created", no_wrap=True, min_width=11)
    table.add_column("cost", no_wrap=True, justify="right", min_width=7)
    table.add_column("task", no_wrap=True, overflow="ellipsis", ratio=2)
    if wide:
        table.add_column("repo", no_wrap=True, overflow="ellipsis", ratio=1)
    for job in page["data"]:
        cells = [
            job["id"],
            _styled(job["status"]),
            job["created_at"][5:16].replace("T", " "),
            _cost(job["cost_usd"]),
            _short(job["task"], 80),
        ]
        table.add_row(*cells, *([job["repo_url"] or "-"] if wide else []))
    console.print(table)
    if page["next_cursor"]:
        console.print(f"more: agenticore jobs --cursor {page['next_cursor']}")


@app.command("job")
def show_job(
    job_id: Annotated[str, typer.Argument(help="job id")],
    as_json: JsonOption = False,
    api: ApiOption = None,
) -> None:
    """Show one job."""
    job = _call(_client(api).job, job_id)
    _print_json(job) if as_json else _print_job(job)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="job id")], api: ApiOption = None) -> None:
    """Cancel a queued or running job."""
    job = _call(_client(api).cancel, job_id)
    console.print(f"job {job['id']} is {_styled(job['status'])}")


@app.command()
def diff(job_id: Annotated[str, typer.Argument(help="job id")], api: ApiOption = None) -> None:
    """Print the unified diff of a job's work against its base."""
    patch = _call(_client(api).diff, job_id)
    sys.stdout.buffer.write(patch)  # the bytes git printed: `| git apply` takes them as they are
    sys.stdout.buffer.flush()


@app.command()
def checkout(
    job_id: Annotated[str, typer.Argument(help="job id")],
    directory: Annotated[
        Path, typer.Argument(help="a clone of the job's repository (default: here)")
    ] = Path("."),
    api: ApiOption = None,
) -> None:
    """Fetch a job's branch into a clone of its repository, from the API (any machine)."""
    client = _client(api)
    job = _call(client.job, job_id)
    branch, base = job.get("branch"), job.get("base_sha")
    if not (job.get("repo_url") and branch and base):
        _fail(f"job {job_id} has no branch to check out ({job['status']})", code=2)
    _check_clone(directory, base, job.get("base_ref") or "its base")
    bundle = _call(client.bundle, job_id)
    ref = f"refs/heads/{branch}"
    with tempfile.TemporaryDirectory(prefix="agenticore-") as tmp:
        path = Path(tmp) / "job.bundle"
        path.write_bytes(bundle)
        # no "+": a branch the user moved on from is not overwritten
        fetched = _git_in(directory, "fetch", "--quiet", str(path), f"{ref}:{ref}")
    if fetched.returncode != 0:
        _fail(f"git fetch into {directory} failed: {fetched.stderr.strip()}", code=1)
    count = _git_in(directory, "rev-list", "--count", f"{base}..{ref}").stdout.strip()
    console.print(
        f"fetched branch {escape(branch)} ({count} commit(s) on {base[:12]}) into "
        f"{escape(str(directory))}\n  git -C {escape(str(directory))} switch {escape(branch)}",
        highlight=False,
    )


@app.command()
def profiles(as_json: JsonOption = False, api: ApiOption = None) -> None:
    """List agent profiles."""
    page = _call(_client(api).profiles)
    if as_json:
        _print_json(page)
        return
    table = Table("name", "model", "max turns", "permission mode", "description")
    for p in page["data"]:
        table.add_row(
            p["name"],
            p["model"] or "-",
            str(p["max_turns"] or "-"),
            p["permission_mode"] or "-",
            p["description"],
        )
    console.print(table)


@app.command()
def status(as_json: JsonOption = False, api: ApiOption = None) -> None:
    """The fleet at a glance: is the API ready (broker, store), which workers are there and
    what they do, the circuit breakers, how many jobs wait at each priority and for how
    long (a viewer key). Exits 1 if the API is not ready."""
    client = _client(api)
    ready = _call(client.ready)
    try:
        fleet: dict[str, Any] | None = client.fleet_status()
        unknown = None
    except (ApiError, ApiUnavailable) as exc:  # readiness still tells the most important part
        fleet, unknown = None, getattr(exc, "detail", str(exc))
    if as_json:
        _print_json(ready | (fleet or {"fleet_error": unknown}))
    else:
        _print_status(client.base_url, ready, fleet, unknown)
    raise typer.Exit(0 if ready["ready"] else 1)


def _print_status(
    base_url: str, ready: dict[str, Any], fleet: dict[str, Any] | None, unknown: str | None
) -> None:
    verdict = "[green]ready[/]" if ready["ready"] else "[red]not ready[/]"
    console.print(f"API {escape(base_url)}: {verdict} ({escape(ready['backend'])})")
    console.print(f"  broker: {escape(ready['broker'])}\n  store:  {escape(ready['store'])}")
    if fleet is None:
        console.print(f"[yellow]Fleet details unavailable[/]: {escape(unknown or '')}")
        return
    now = datetime.fromisoformat(fleet["checked_at"])
    workers = Table("worker", "state", "jobs", "permits", "last heartbeat", box=None,
                    header_style="bold", title="Workers", title_justify="left")  # fmt: skip
    for worker in fleet["workers"]:
        seen = worker["last_seen"]
        age = f"{_age((now - datetime.fromisoformat(seen)).total_seconds())} ago" if seen else "-"
        style = WORKER_STYLE.get(worker["state"], "red")
        workers.add_row(escape(worker["name"]), f"[{style}]{worker['state']}[/]",
                        str(worker["running"]), str(worker["permits_in_use"]), age)  # fmt: skip
    console.print(workers if fleet["workers"] else "[red]No workers[/]: start one with "
                  "agenticore worker")  # fmt: skip
    breakers = Table("breaker", "state", "failures", "retry in", "last error", box=None,
                     header_style="bold", title="Breakers", title_justify="left")  # fmt: skip
    for breaker in fleet["breakers"]:
        style = {"closed": "green", "half_open": "yellow"}.get(breaker["state"], "red")
        retry = _age(breaker["retry_in_seconds"]) if breaker["state"] == "open" else "-"
        breakers.add_row(escape(breaker["name"]), f"[{style}]{breaker['state']}[/]",
                         str(breaker["failures"]), retry,
                         escape(_short(breaker["last_error"] or "-", 40)))  # fmt: skip
    console.print(breakers)
    by_priority = ", ".join(f"{name} {n}" for name, n in fleet["queue_depth_by_priority"].items())
    console.print(f"[bold]Queue[/]: {fleet['queue_depth']} waiting in the broker ({by_priority}); "
                  f"{fleet['running']} running")  # fmt: skip
    oldest = fleet["oldest_queued_job"]
    if oldest:
        console.print(f"  oldest queued job: {oldest['id']}, waiting {_age(oldest['age_seconds'])}")
    else:
        console.print("  no job is queued")


def _age(seconds: float) -> str:
    """A duration the way people say it: 42s, 3m 05s, 2h 10m, 4d 3h."""
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# -- helpers -----------------------------------------------------------------------------


def _client(api: str | None) -> Client:
    settings = get_settings()
    return Client(api or settings.api_url, api_key=_api_key(settings))


def _api_key(settings: Settings) -> str | None:
    """AGENTICORE_API_KEY, else the key `agenticore up` wrote to HOME/cli.key."""
    key = os.environ.get("AGENTICORE_API_KEY", "").strip()
    if key:
        return key
    try:
        return (settings.home / CLI_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, **kwargs)
    except ApiUnavailable as exc:
        _fail(f"{exc}\nIs it running? Start it with: agenticore up", code=1)
    except ApiError as exc:
        client = getattr(method, "__self__", None)
        if exc.status_code == 401 and isinstance(client, Client) and not client.has_key:
            _fail(
                f"the API refused the request: {exc.detail}. Set AGENTICORE_API_KEY "
                "(agenticore keys create), or start locally with agenticore up (HOME/cli.key)",
                code=2,
            )
        if exc.status_code in (401, 403):
            _fail(f"the API refused the key: {exc.detail}", code=2)
        # 4xx is the caller's to fix; a busy fleet (429) or a server error is not
        _fail(exc.detail, code=2 if exc.status_code < 500 and exc.status_code != 429 else 1)


def _git_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


def _check_clone(directory: Path, base: str, base_ref: str) -> None:
    """``directory`` must be a git repository that has the job's base commit: the bundle
    holds only the commits past it."""
    if not directory.is_dir():
        _fail(f"{directory} is not a directory", code=2)
    if _git_in(directory, "rev-parse", "--git-dir").returncode != 0:
        _fail(f"{directory} is not a git repository: clone the job's repository first, or "
              "name a clone: agenticore checkout ID DIR", code=2)  # fmt: skip
    if _git_in(directory, "cat-file", "-e", f"{base}^{{commit}}").returncode != 0:
        _fail(f"{directory} lacks the job's base commit {base[:12]} ({base_ref}): "
              "git fetch its remote first", code=2)  # fmt: skip


def _follow(client: Client, job: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    started = time.monotonic()
    last = None
    try:
        with console.status("", spinner="dots") as spinner:
            while job["status"] not in FINAL_STATES or job.get("pr_status") == "pending":
                state = "opening PR" if job["status"] in FINAL_STATES else job["status"]
                if state != last and not quiet:
                    where = f" on {job['worker']}" if job.get("worker") else ""
                    console.print(f"{job['id']}: {_styled(state)}{where}")
                    last = state
                spinner.update(f"{state} … {time.monotonic() - started:.0f}s")
                time.sleep(0.5)
                job = _call(client.job, job["id"])
    except KeyboardInterrupt:
        errors.print(f"stopped following; the job goes on. Cancel: agenticore cancel {job['id']}")
        raise typer.Exit(130) from None
    return job


def _print_job(job: dict[str, Any]) -> None:
    lines = [
        f"[bold]status[/]    {_styled(job['status'])}",
        f"[bold]task[/]      {_short(job['task'], 100)}",
    ]
    fields = [
        ("repo", job.get("repo_url")),
        ("branch", job.get("branch")),
        ("worker", job.get("worker")),
        ("session", job.get("session_id")),
        ("cost", _cost(job.get("cost_usd")) if job.get("cost_usd") is not None else None),
        ("turns", job.get("num_turns")),
        ("elapsed", _elapsed(job)),
        ("changed", ", ".join(job.get("changed_files") or []) or None),
        ("commit", job.get("commit_sha")),
        ("pr", job.get("pr_url") or job.get("pr_status")),
        ("error", job.get("error")),
        ("pr error", job.get("pr_error")),
    ]
    lines += [f"[bold]{name:<9}[/] {value}" for name, value in fields if value is not None]
    lines += _work_lines(job)
    if job.get("result"):
        lines += ["", job["result"]]
    console.print(Panel("\n".join(lines), title=f"job {job['id']}", expand=False))


def _work_lines(job: dict[str, Any]) -> list[str]:
    """How to get the job's work: its commits are on its branch in the workers' repo cache."""
    branch, url = job.get("branch"), job.get("repo_url")
    if not (branch and url):
        return []
    if not job.get("commit_sha"):
        return [f"[bold]{'work':<9}[/] no commits on {escape(branch)}"]
    lines = [
        f"[bold]{'work':<9}[/] agenticore diff {job['id']}",
        f"{'':<9} agenticore checkout {job['id']} {escape('[DIR]')}",
    ]
    cache = RepoCache(get_settings()).repo_dir(url)
    if os.access(cache, os.R_OK | os.X_OK):  # the cache is on this machine: plain git will do
        lines.append(f"{'':<9} git fetch {escape(str(cache))} {escape(f'{branch}:{branch}')}")
    if job.get("pr_url"):  # pushed
        lines.append(f"{'':<9} git fetch origin {escape(branch)}")
    return lines


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _elapsed(job: dict[str, Any]) -> str | None:
    if not (job.get("started_at") and job.get("finished_at")):
        return None
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return f"{(finished - started).total_seconds():.1f}s"


def _worker_pid(pidfile: Path) -> int:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        _fail(f"no running worker found (pid file {pidfile})", code=1)
    return pid


def _celery_control(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.app", "control", *args, "--timeout", "5"],
        check=False,
        stdout=subprocess.DEVNULL,
    )


def _running_on(store: JobStore, worker: str) -> list[Job]:
    return [job for job in store.all_jobs(JobStatus.RUNNING) if job.worker == worker]


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rindex(")") + 2] == "Z":  # exited; its parent has yet to reap it
            return
        time.sleep(0.2)
    _fail(f"worker {pid} did not stop within {timeout:g}s", code=1)


def _check_tracing() -> None:
    try:
        telemetry.check()
    except ConfigurationError as exc:
        _fail(str(exc), code=2)


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def _fail(message: str, *, code: int) -> NoReturn:
    errors.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


if __name__ == "__main__":
    main()
