"""A small real forge for tests: GitHub's and GitLab's pull request endpoints, and git's smart
HTTP protocol (through the real ``git http-backend``), on one local HTTP server.

Every API and git request must carry ``token`` (GitHub: ``Authorization: token``/``Bearer``;
GitLab: ``PRIVATE-TOKEN``; git: HTTP basic with the token as password), else 401.
``fail(...)`` makes the next matching requests fail (401, 422, 5xx, 429 + Retry-After), and
``hold_creates`` lets a test kill a worker while the forge is still answering a create.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_GIT_PATH = re.compile(
    r"^/(?P<repo>.+?\.git)/(?P<rest>info/refs|git-upload-pack|git-receive-pack)$"
)


@dataclass
class Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class ForgeState:
    pulls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # GitHub, by "o/r"
    merge_requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # GitLab
    users: dict[str, int] = field(default_factory=dict)  # GitLab usernames -> ids
    collaborators: set[str] | None = None  # GitHub: None = anyone may be asked to review


class FakeForge:
    def __init__(self, git_root: Path, token: str | None = None) -> None:
        self.git_root = git_root
        self.token = token
        self.state = ForgeState()
        self.requests: list[Recorded] = []
        self.git_requests: list[tuple[str, bool]] = []  # (path, authorized)
        self.failures: list[Failure] = []
        self.stale_lists = 0  # the next N list calls miss new PRs, as a lagging index does
        self.hold_creates = threading.Event()  # set: a create is stored, then held
        self.create_reached = threading.Event()
        self.release_creates = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeForge:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release_creates.set()
        self.server.shutdown()
        self.server.server_close()

    # -- test controls -------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str = "injected failure",
    ) -> None:
        """The next ``times`` requests matching ``method`` and the ``path`` regex fail."""
        body = {"message": message}
        self.failures.append(Failure(method, re.compile(path), status, times, headers or {}, body))

    def github_pulls(self, project: str) -> list[dict[str, Any]]:
        return self.state.pulls.get(project, [])

    def gitlab_merge_requests(self, project: str) -> list[dict[str, Any]]:
        return self.state.merge_requests.get(project, [])

    def api_calls(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- request handling ----------------------------------------------------------------

    def injected(self, method: str, path: str) -> Failure | None:
        with self.lock:
            for failure in self.failures:
                if failure.method == method and failure.path.search(path) and failure.times:
                    failure.times -= 1
                    return failure
        return None

    def stale(self) -> bool:
        with self.lock:
            if self.stale_lists:
                self.stale_lists -= 1
                return True
        return False

    def has_branch(self, project: str, branch: str) -> bool:
        repo = self.git_root / f"{project}.git"
        if not repo.is_dir():
            return True  # a project without a served repo: nothing to check against
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
            cwd=repo,
            capture_output=True,
        )
        return found.returncode == 0


def _handler(forge: FakeForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        # -- plumbing --------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            body = self._read_body()
            git = _GIT_PATH.match(parts.path)
            if git:
                self._git(method, parts.path, parts.query, body)
                return
            data = json.loads(body) if body else None
            with forge.lock:
                forge.requests.append(
                    Recorded(method, parts.path, parse_qs(parts.query), dict(self.headers), data)
                )
            if not self._api_authorized(parts.path):
                self._json(401, {"message": "Bad credentials"})
                return
            failure = forge.injected(method, parts.path)
            if failure is not None:
                self._json(failure.status, failure.body, failure.headers)
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path.startswith("/api/v4/"):
                status, payload = _gitlab(forge, method, parts.path, query, data)
            else:
                status, payload = _github(forge, self, method, parts.path, query, data)
            self._json(status, payload)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _api_authorized(self, path: str) -> bool:
            if forge.token is None:
                return True
            if path.startswith("/api/v4/"):
                return self.headers.get("PRIVATE-TOKEN") == forge.token
            scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
            return scheme.lower() in ("token", "bearer") and value == forge.token

        def _git_authorized(self) -> bool:
            scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "basic":
                return forge.token is None
            _, _, password = base64.b64decode(value).decode().partition(":")
            return forge.token is None or password == forge.token

        def _git(self, method: str, path: str, query: str, body: bytes) -> None:
            authorized = self._git_authorized()
            with forge.lock:
                forge.git_requests.append((path, authorized))
            if not authorized:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake forge"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            env = {
                "GIT_PROJECT_ROOT": str(forge.git_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": method,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "REMOTE_USER": "agent",  # lets http-backend accept pushes
                "REMOTE_ADDR": "127.0.0.1",
                "PATH": "/usr/bin:/bin:/usr/local/bin",
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            ).stdout
            head, _, payload = out.partition(b"\r\n\r\n")
            if not payload and b"\n\n" in out:
                head, _, payload = out.partition(b"\n\n")
            status = 200
            headers = []
            for line in head.decode().splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                else:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


# -- GitHub ------------------------------------------------------------------------------

_GH_REPO = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")


def _github(
    forge: FakeForge,
    handler: BaseHTTPRequestHandler,
    method: str,
    path: str,
    query: dict[str, str],
    data: Any,
) -> tuple[int, Any]:
    match = _GH_REPO.match(path)
    if match is None:
        return 404, {"message": "Not Found"}
    project = f"{match['owner']}/{match['name']}"
    rest = match["rest"] or ""
    api = f"{forge.url}/repos/{project}"
    with forge.lock:
        pulls = forge.state.pulls.setdefault(project, [])
    if rest == "" and method == "GET":
        return 200, {"full_name": project, "name": match["name"], "url": api,
                     "owner": {"login": match["owner"]}, "default_branch": "main"}  # fmt: skip
    if rest == "/pulls" and method == "GET":
        if forge.stale():
            return 200, []
        found = [
            p
            for p in pulls
            if (not query.get("head") or p["head"]["label"] == query["head"])
            and query.get("state", "open") in ("all", p["state"])
        ]
        return 200, list(reversed(found))  # newest first, as GitHub sorts by default
    if rest == "/pulls" and method == "POST":
        return _github_create(forge, project, api, pulls, data)
    number_match = re.match(r"^/(pulls|issues)/(\d+)(/.*)?$", rest)
    if number_match is None:
        return 404, {"message": "Not Found"}
    pull = next((p for p in pulls if p["number"] == int(number_match[2])), None)
    if pull is None:
        return 404, {"message": "Not Found"}
    action = (number_match[1], number_match[3] or "", method)
    if action in (("pulls", "", "GET"), ("issues", "", "GET")):
        return 200, pull
    if action == ("pulls", "", "PATCH"):
        with forge.lock:
            pull.update({k: v for k, v in data.items() if k in ("title", "body", "state")})
        return 200, pull
    if action == ("issues", "/labels", "POST"):
        names = data["labels"] if isinstance(data, dict) else data
        with forge.lock:
            for name in names:
                if name not in [label["name"] for label in pull["labels"]]:
                    pull["labels"].append({"name": name})
        return 200, pull["labels"]
    if action == ("pulls", "/requested_reviewers", "POST"):
        users = data.get("reviewers", [])
        allowed = forge.state.collaborators
        if allowed is not None and any(user not in allowed for user in users):
            return 422, {"message": "Reviews may only be requested from collaborators."}
        with forge.lock:
            pull["requested_reviewers"] = [{"login": u} for u in users]
            pull["requested_teams"] = [{"slug": t} for t in data.get("team_reviewers", [])]
        return 201, pull
    return 404, {"message": "Not Found"}


def _github_create(
    forge: FakeForge, project: str, api: str, pulls: list[dict[str, Any]], data: dict[str, Any]
) -> tuple[int, Any]:
    owner = project.split("/")[0]
    head = data.get("head", "")
    label = head if ":" in head else f"{owner}:{head}"
    ref = label.split(":", 1)[1]
    with forge.lock:
        if any(p["head"]["label"] == label and p["state"] == "open" for p in pulls):
            exists = f"A pull request already exists for {label}."
            return 422, {"message": "Validation Failed", "errors": [{"message": exists}]}
        if not forge.has_branch(project, ref):
            return 422, {"message": "Validation Failed",
                         "errors": [{"resource": "PullRequest", "field": "head",
                                     "code": "invalid"}]}  # fmt: skip
        number = len(pulls) + 1
        pull = {
            "number": number,
            "url": f"{api}/pulls/{number}",
            "html_url": f"{forge.url}/{project}/pull/{number}",
            "issue_url": f"{api}/issues/{number}",
            "state": "open",
            "draft": bool(data.get("draft", False)),
            "title": data["title"],
            "body": data.get("body"),
            "head": {"ref": ref, "label": label},
            "base": {"ref": data["base"]},
            "labels": [],
            "requested_reviewers": [],
            "requested_teams": [],
        }
        pulls.append(pull)
    _hold(forge)
    return 201, pull


def _hold(forge: FakeForge) -> None:
    """With ``hold_creates`` set, the created PR is stored but the answer waits: the caller
    may die meanwhile, exactly like a worker killed mid-request."""
    if forge.hold_creates.is_set():
        forge.create_reached.set()
        forge.release_creates.wait(timeout=60)


# -- GitLab ------------------------------------------------------------------------------

_GL_PROJECT = re.compile(r"^/api/v4/projects/(?P<id>[^/]+)(?P<rest>/.*)?$")


def _gitlab(
    forge: FakeForge, method: str, path: str, query: dict[str, str], data: Any
) -> tuple[int, Any]:
    if path == "/api/v4/users" and method == "GET":
        uid = forge.state.users.get(query.get("username", ""))
        return 200, ([{"id": uid, "username": query["username"]}] if uid else [])
    match = _GL_PROJECT.match(path)
    if match is None:
        return 404, {"message": "404 Not Found"}
    project = unquote(match["id"])
    rest = match["rest"] or ""
    with forge.lock:
        requests = forge.state.merge_requests.setdefault(project, [])
    if rest == "/merge_requests" and method == "GET":
        if forge.stale():
            return 200, []
        found = [
            mr
            for mr in requests
            if query.get("source_branch") in (None, mr["source_branch"])
            and query.get("state", "all") in ("all", mr["state"])
        ]
        return 200, list(reversed(found))
    if rest == "/merge_requests" and method == "POST":
        with forge.lock:
            source = data["source_branch"]
            clash = [mr for mr in requests if mr["source_branch"] == source
                     and mr["state"] == "opened"]  # fmt: skip
            if clash:
                return 409, {"message": ["Another open merge request already exists for this "
                                         f"source branch: !{clash[0]['iid']}"]}  # fmt: skip
            if not forge.has_branch(project, source):
                return 422, {"message": ["Source branch does not exist"]}
            iid = len(requests) + 1
            mr = {
                "iid": iid,
                "web_url": f"{forge.url}/{project}/-/merge_requests/{iid}",
                "state": "opened",
                "title": data["title"],
                "description": data.get("description"),
                "source_branch": source,
                "target_branch": data["target_branch"],
                "draft": data["title"].startswith("Draft:"),
                "labels": [],
                "reviewers": [],
            }
            requests.append(mr)
        _hold(forge)
        return 201, mr
    number = re.match(r"^/merge_requests/(\d+)$", rest)
    found = [m for m in requests if number and m["iid"] == int(number[1])]
    if not found or method != "PUT":
        return 404, {"message": "404 Not Found"}
    mr = found[0]
    with forge.lock:
        for key in ("title", "description"):
            if key in data:
                mr[key] = data[key]
        if "add_labels" in data:
            mr["labels"] += [x for x in data["add_labels"].split(",") if x not in mr["labels"]]
        if "reviewer_ids" in data:
            mr["reviewers"] = [{"id": i} for i in data["reviewer_ids"]]
        mr["draft"] = mr["title"].startswith("Draft:")
    return 200, mr
