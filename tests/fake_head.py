"""A fake tasuki head's HTTP API on 127.0.0.1, for the operator's tests (head_api, handlers, scenarios).

It answers what runtime/tasuki/metrics.py answers, from state the test sets:

  GET  /api/v1/demand             {"pending": [...], "waiting_for_dependencies", "nodes": [...], "version"}
  GET  /api/v1/nodes              the node list
  POST /api/v1/nodes/{id}/drain   needs "Authorization: Bearer <token>" (401 otherwise); 404 for an
                                  unknown node; {"if_idle": true} on a busy node → 409 {"refused": true,
                                  "drained": false, "running_tasks", "state", "error"}; otherwise the node
                                  turns "draining" and → 200 {"node_id", "state", "running_tasks",
                                  "objects", "drained": busy_workers == 0}
  GET  /healthz                   "ok"
  /api/v1/jobs...                 the jobs API, served by a FakeJobsServer (tests/fake_jobs_server.py):
                                  `head.jobs_api` (its `jobs`, `packages`, `finish(...)`), with the
                                  head's token (setting `head.token` sets its token too)

    with FakeHead(token="t0k") as head:
        head.add_node("n1", node_name="demo-worker-cpu-abcde", group="cpu", resources={"CPU": 2})
        head.set_demand([{"shape": {"CPU": 1}, "count": 3}])
        ... HeadAPI(head.url, "t0k").demand() ...
        head.set_busy("n1", 1)                 # a drain with if_idle is now refused (409)
        head.fail(500)                         # every request answers 500 (fail("close"): hang up)
        head.fail(None)                        # healthy again
        head.delay = 2.0                       # answer every request 2 s late
        assert head.drains == [{"node_id": "n1", "if_idle": True}]

`drains` records every authorized drain request that reached the drain logic (refused ones too,
unknown nodes too), in order; `requests` records (method, path) of every request. State is guarded
by one lock; the server runs in daemon threads and `stop()` (or leaving the `with`) closes it.
"""
from __future__ import annotations

import copy
import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fake_jobs_server
from fake_jobs_server import FakeJobsServer

VERSION = "0.0.0-fake"
DRAIN_PATH = re.compile(r"^/api/v1/nodes/([^/]+)/drain$")


class FakeHead:
    """A fake head's HTTP API; see the module docstring. `prefix` serves the API under a path
    prefix (as behind a proxy), e.g. "/clusters/demo"; `url` includes it. `host`: the loopback
    address it listens on."""

    def __init__(self, token: str = "fake-token", prefix: str = "", host: str = "127.0.0.1") -> None:
        self.jobs_api: FakeJobsServer | None = None  # the jobs API, from start() to stop()
        self.token = token
        self.host = host
        self.prefix = prefix.rstrip("/")
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.waiting_for_dependencies = 0
        self.node_table: dict[str, dict] = {}       # node_id → the head's node dict
        self.drains: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.failure: int | str | None = None       # None, an HTTP status, or "close"
        self.delay = 0.0                            # seconds before each answer
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeHead:
        self.jobs_api = FakeJobsServer(self.host, token=self.token)
        server = ThreadingHTTPServer((self.host, 0), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.fake = self
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-head-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()                    # a delayed answer stops waiting
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.jobs_api is not None:
            self.jobs_api.close()

    def __enter__(self) -> FakeHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake head first (use it as a context manager)"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, prefix included (what `head_url` would build for this head)."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    @property
    def token(self) -> str:
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        self._token = value
        if self.jobs_api is not None:
            self.jobs_api.token = value

    # --- state the test sets ---------------------------------------------------------------------
    def set_demand(self, pending: list[dict], nodes: list[dict] | None = None, waiting: int = 0) -> None:
        """Pending bundles: [{"shape": {"CPU": 1}, "count": 3, "feasible": True}] ("feasible" defaults
        to True). `nodes`, when given, replaces the node table (each as `add_node`'s keywords, with
        "node_id")."""
        with self.lock:
            self.pending = [{"shape": dict(p["shape"]), "count": int(p["count"]),
                             "feasible": bool(p.get("feasible", True))} for p in pending]
            self.waiting_for_dependencies = waiting
        if nodes is not None:
            with self.lock:
                self.node_table.clear()
            for n in nodes:
                self.add_node(**n)

    def add_node(self, node_id: str, *, node_name: str = "", group: str = "", state: str = "alive",
                 busy_workers: int = 0, seconds_idle: float = 0.0, version: str = VERSION,
                 resources: dict | None = None, available: dict | None = None, objects: int = 0,
                 is_head_node: bool = False, ip: str = "127.0.0.1") -> dict:
        """Add (or replace) a node as the head reports it; returns a copy of its dict."""
        resources = dict(resources or {"CPU": 1.0})
        node = {"node_id": node_id, "ip": ip, "state": state, "address": f"tcp://{ip}:0", "node_name": node_name,
                "group": group, "is_head_node": is_head_node, "version": version, "resources": resources,
                "available": dict(available if available is not None else resources),
                "workers": max(1, busy_workers), "busy_workers": busy_workers, "seconds_idle": seconds_idle,
                "object_store": {"used": 0, "capacity": 0, "objects": objects, "spilled": 0}}
        with self.lock:
            self.node_table[node_id] = node
            return copy.deepcopy(node)

    def set_busy(self, node_id: str, busy_workers: int) -> None:
        """Workers running a task on the node; a busy node reports seconds_idle 0, as the head does."""
        with self.lock:
            node = self.node_table[node_id]
            node["busy_workers"] = busy_workers
            node["workers"] = max(node["workers"], busy_workers)
            if busy_workers:
                node["seconds_idle"] = 0.0

    def set_idle(self, node_id: str, seconds_idle: float) -> None:
        with self.lock:
            self.node_table[node_id]["seconds_idle"] = seconds_idle

    def set_state(self, node_id: str, state: str) -> None:
        """"alive", "draining" or "dead"."""
        with self.lock:
            self.node_table[node_id]["state"] = state

    def remove_node(self, node_id: str) -> None:
        with self.lock:
            self.node_table.pop(node_id, None)

    def fail(self, failure: int | str | None) -> None:
        """Fail every request from now on: an HTTP status (500, 503) answered with {"error": ...}, or
        "close" to close the connection without answering; None to answer normally again."""
        if not (failure is None or failure == "close" or isinstance(failure, int)):
            raise ValueError(f"fail() takes an HTTP status, 'close' or None, got {failure!r}")
        with self.lock:
            self.failure = failure

    def node(self, node_id: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.node_table[node_id])

    # --- answers (called by the handler, under the lock) -------------------------------------------
    def demand_json(self) -> dict:
        return {"pending": copy.deepcopy(self.pending), "waiting_for_dependencies": self.waiting_for_dependencies,
                "nodes": copy.deepcopy(list(self.node_table.values())), "version": VERSION}

    def drain(self, node_id: str, if_idle: bool) -> tuple[int, dict]:
        """What the head does with a drain request (metrics.Handler.drain and Head.drain)."""
        self.drains.append({"node_id": node_id, "if_idle": if_idle})
        node = self.node_table.get(node_id)
        if node is None:
            known = ", ".join(self.node_table) or "none"
            return 404, {"error": f"no node {node_id!r} in this cluster (nodes: {known})"}
        busy = node["busy_workers"]
        if if_idle and busy:
            return 409, {"node_id": node_id, "drained": False, "refused": True, "running_tasks": busy,
                         "state": node["state"],
                         "error": f"node {node_id} runs {busy} task(s); it was not drained (if_idle was set). "
                                  f"Retry when it is idle, or drain without if_idle."}
        if node["state"] == "alive":
            node["state"] = "draining"
        return 200, {"node_id": node_id, "state": node["state"], "running_tasks": busy,
                     "objects": node["object_store"]["objects"], "drained": busy == 0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tasuki-fake"
    sys_version = ""

    @property
    def fake(self) -> FakeHead:
        return self.server.fake

    def log_message(self, format, *args) -> None:
        pass

    def reply(self, code: int, value) -> None:
        body = (value if isinstance(value, bytes) else json.dumps(value).encode()) + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if not isinstance(value, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def begin(self) -> str | None:
        """Record the request, wait the delay, apply a failure; the path without the prefix, or None
        when the request was already answered (or the connection closed)."""
        with self.fake.lock:
            self.fake.requests.append((self.command, self.path))
            failure, delay = self.fake.failure, self.fake.delay
        if delay and self.fake._stopping.wait(delay):
            self.close_connection = True
            return None
        if failure == "close":
            self.close_connection = True
            return None
        if failure is not None:
            self.reply(failure, {"error": f"the fake head was told to fail with {failure}"})
            return None
        path = self.path.split("?", 1)[0]
        if not path.startswith(self.fake.prefix + "/"):
            self.reply(404, {"error": f"no such endpoint {path!r}"})
            return None
        return path[len(self.fake.prefix):].rstrip("/") or "/"

    def jobs(self) -> bool:
        """A jobs API request: answered by the FakeJobsServer (after begin()'s failure and delay)."""
        if not self.path.split("?", 1)[0].startswith(self.fake.prefix + "/api/v1/jobs"):
            return False
        path = self.begin()
        if path is not None:
            query = self.path.partition("?")[2]
            fake_jobs_server.serve(self.fake.jobs_api, self, self.command, path + (f"?{query}" if query else ""))
        return True

    def do_PUT(self) -> None:
        if not self.jobs() and self.begin() is not None:
            self.reply(404, {"error": f"no such endpoint {self.path!r}"})

    def do_GET(self) -> None:
        if self.jobs():
            return
        path = self.begin()
        if path is None:
            return
        with self.fake.lock:
            if path == "/api/v1/demand":
                return self.reply(200, self.fake.demand_json())
            if path == "/api/v1/nodes":
                return self.reply(200, self.fake.demand_json()["nodes"])
        if path == "/healthz":
            return self.reply(200, b"ok")
        self.reply(404, {"error": f"no such endpoint {path!r}"})

    def do_POST(self) -> None:
        if self.jobs():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.begin()
        if path is None:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.fake.token}".encode()):
            return self.reply(401, {"error": "POST needs the cluster token: send the header "
                                             "'Authorization: Bearer <token>'"})
        match = DRAIN_PATH.match(path)
        if match is None:
            return self.reply(404, {"error": f"no such endpoint {path!r}; POST only /api/v1/nodes/ID/drain"})
        try:
            options = json.loads(body) if body.strip() else {}
            if not isinstance(options, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return self.reply(400, {"error": f"bad drain request: {e}. Send no body, or {{\"if_idle\": true}}"})
        with self.fake.lock:
            code, answer = self.fake.drain(match.group(1), bool(options.get("if_idle", False)))
        self.reply(code, answer)
