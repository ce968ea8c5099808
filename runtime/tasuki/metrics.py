"""The head's HTTP endpoint: Prometheus metrics and a small JSON state API. Text only.

Head.__init__ calls `serve_http` when it is given a metrics port. The server runs in daemon
threads of the head process, but the head's state belongs to its event loop, so a handler never
reads it directly: it asks the loop over the inproc control socket, one DEALER per request
(zmq sockets are not thread-safe), one JSON frame each way:

  HTTP thread  DEALER ──{"what": "status"|"demand"|"nodes"|"drain", "arg": ...}──► head ROUTER
               (inproc://head-control)       ◄──── JSON answer (or {"error": "..."}) ────┘

Endpoints:
  GET  /metrics                     Prometheus text (the names below)
  GET  /api/v1/status               counters, nodes, pending by shape (what `tasuki status` shows)
  GET  /api/v1/demand               pending bundles by shape (and label_selector) with `feasible`, the
                                    bundles request_resources() asked for (`requested`), per node seconds_idle
  GET  /api/v1/nodes                the node table
  POST /api/v1/nodes/{id}/drain     body {"if_idle": true} (optional): 409 when the node is busy;
                                    needs "Authorization: Bearer <cluster token>" (401 without it).
                                    The node takes no new work; its actors that may restart move, the
                                    objects only it holds are copied away. Answer: `drained` (no task
                                    running, no live actor, no object to move), `running_tasks`,
                                    `actors`, `objects_to_move`, `bytes_to_move`, `state`, `reason`
                                    (api | sigterm: its node agent got SIGTERM and is leaving)
  POST .../drain {"cancel": true}   (or DELETE /api/v1/nodes/{id}/drain) the node is alive again; 409
                                    for a node leaving on SIGTERM (that drain cannot be cancelled)
  GET  /healthz                     200 while the head's loop answers, 503 otherwise

Jobs (job_manager.py runs them; every jobs endpoint needs the Bearer token, 401 without it; errors are
{"error": "..."} with 400/404/409/413):
  PUT  /api/v1/jobs/packages/SHA256 a zip of the working directory: 201 {"package", "bytes"} (200 if there
                                    already); 413 from its Content-Length alone, over
                                    TASUKI_JOB_PACKAGE_MAX_BYTES (100 MiB); 400 if its sha256 is another
  POST /api/v1/jobs                 {"entrypoint": "python s.py args", "job_id", "working_dir": SHA256,
                                    "env", "pip", "metadata"} (all but entrypoint optional): 201 {"job_id"};
                                    409 for a job id taken
  GET  /api/v1/jobs[/ID]            the jobs, newest first (or one): job_id, status (PENDING | RUNNING |
                                    SUCCEEDED | FAILED | STOPPED), entrypoint, message, exit_code,
                                    submitted_at, start_time, end_time, metadata, env (secrets as ***),
                                    pip, working_dir, driver_pid
  GET  /api/v1/jobs/ID/logs?offset=N&follow=1   its output from byte N (chunked until the job ends with
                                    follow); X-Tasuki-Log-Offset: the offset of the first byte sent (bounded
                                    logs, TASUKI_JOB_LOG_MAX_BYTES: dropped bytes are skipped)
  POST /api/v1/jobs/ID/stop         SIGTERM to its process group, SIGKILL after 5 s; answers the job once
                                    STOPPED; its tasks and non-detached actors end too; 409 if it had ended

Metrics (`families`; per-node series carry `node` and the node's worker `group`, "" outside Kubernetes;
the namespace and cluster of a Kubernetes head come from the scrape's target labels):

  tasuki_pending_tasks{shape}                  tasks queued for resources, by shape ('CPU=1,GPU=4')
  tasuki_running_tasks, tasuki_objects, tasuki_drivers
  tasuki_tasks_finished_total{outcome}         succeeded | failed | crashed | cancelled
  tasuki_task_latency_seconds                  histogram: submission to end
  tasuki_actors{state}                         pending | alive | restarting | dead
  tasuki_nodes{state}                          alive | draining | dead
  tasuki_node_deaths_total{previous_state}     nodes that stopped heartbeating, by the state they were
                                               in: alive (lost) | draining (left after a drain)
  tasuki_node_info{node,node_name,group,ip,state,version,head}   1 per node, dead ones too
  tasuki_node_labels{node,node_name,group,label_<key>...}         1 per node with labels: each of its
                                               labels as a Prometheus label, as kube-state-metrics'
                                               kube_node_labels (join on node with group_left)
  tasuki_workers, tasuki_busy_workers, tasuki_node_idle_seconds{node,group}
  tasuki_object_store_{used,capacity,spilled}_bytes{node,group}
  tasuki_resource_{total,available}{node,group,resource}

Nothing here unpickles: requests are paths, small JSON bodies and job packages (zips, streamed to disk),
answers are text and JSON.
Reading is open to whoever reaches the port (Prometheus scrapes it); changing anything needs the
cluster token, which the operator's autoscaler holds. So whoever reaches the port must not be able
to hurt the head: a request must arrive whole within REQUEST_TIMEOUT_S, at most MAX_CONNECTIONS
are served at once (more get 503), a bad Content-Length gets 400 or 413, and a failing request
writes one line to the head's log (rate-limited there), never a traceback. The head binds the
port to its node IP address unless `tasuki start --metrics-host` says otherwise.
"""
from __future__ import annotations

import errno
import hmac
import io
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs

import zmq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

CONTROL_ADDRESS = "inproc://head-control"
QUERY_TIMEOUT_MS = 5_000          # how long a handler waits for the head's loop
MAX_BODY = 64 * 1024              # bytes: the largest request body read
REQUEST_TIMEOUT_S = 10.0          # seconds a client has to send one whole request (an idle connection too)
MAX_CONNECTIONS = 64              # connections served at once, a thread each; more are answered 503
_BUSY_BODY = b"too many open connections to the tasuki head; retry later\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))
NODE_STATES = ("alive", "draining", "dead")
OUTCOMES = ("succeeded", "failed", "crashed", "cancelled")
ACTOR_STATES = ("pending", "alive", "restarting", "dead")     # protocol.py's actor states, as label values
DRAIN_PATH = re.compile(r"^/api/v1/nodes/([^/]+)/drain$")
PACKAGE_PATH = re.compile(r"^/api/v1/jobs/packages/([^/]+)$")
JOB_PATH = re.compile(r"^/api/v1/jobs(?:/([^/]+)(?:/(logs|stop))?)?$")
UPLOAD_MIN_RATE = 1 << 20         # bytes per second an upload may take at the slowest, beyond REQUEST_TIMEOUT_S
LINGER_S = 2.0                    # seconds an upload refused unread is still read and dropped (see finish_unread)


class HeadUnavailable(Exception):
    """The head's loop did not answer in time (busy, or shutting down)."""


def ask_head(context: zmq.Context, what: str, arg=None, timeout_ms: int = QUERY_TIMEOUT_MS):
    """One question to the head's loop over the inproc control socket; returns the decoded answer."""
    try:
        sock = context.socket(zmq.DEALER)
    except zmq.ZMQError as e:              # the context is terminated: the head is stopping
        raise HeadUnavailable(f"the head is shutting down ({e})") from None
    try:
        sock.linger = 0
        sock.rcvtimeo = timeout_ms
        sock.sndtimeo = timeout_ms
        sock.connect(CONTROL_ADDRESS)
        # DEALER → ROUTER: the head sees [our identity, request] and answers [identity, body],
        # which arrives here as the single frame [body].
        sock.send(json.dumps({"what": what, "arg": arg}).encode())
        return json.loads(sock.recv())
    except zmq.Again:
        raise HeadUnavailable(f"the head did not answer a {what!r} query within {timeout_ms / 1000:g} s") from None
    except zmq.ZMQError as e:
        raise HeadUnavailable(f"the head is shutting down ({e})") from None
    finally:
        sock.close(linger=0)


def shape_label(shape: dict) -> str:
    """A resource shape as a label value: 'CPU=1,GPU=4' (sorted; 'none' for a shape asking nothing)."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(shape.items())) or "none"


def cumulative_buckets(buckets: list) -> list[tuple[str, float]]:
    """The head counts each observation in its first fitting bucket; Prometheus wants running totals
    with Go-style bounds ('0.005', '+Inf')."""
    out, total = [], 0
    for bound, count in buckets:
        total += count
        out.append((floatToGoString(float(bound)), total))
    if not out or out[-1][0] != "+Inf":
        out.append(("+Inf", total))
    return out


class HeadCollector:
    """Reads the head's status once per scrape and turns it into metric families."""

    def __init__(self, context: zmq.Context) -> None:
        self.context = context

    def collect(self):
        status = ask_head(self.context, "status")
        if "error" in status:
            raise HeadUnavailable(status["error"])
        return families(status)

    def describe(self):          # no describe-time scrape: registering must not ask the head
        return []


def families(status: dict) -> list:
    """Metric families from a head status dict (pure: tested without a head)."""
    out = []
    pending = GaugeMetricFamily("tasuki_pending_tasks", "Tasks queued for resources, by resource shape",
                                labels=["shape"])
    for entry in status.get("pending_by_shape", []):
        pending.add_metric([shape_label(entry["shape"])], entry["count"])
    out.append(pending)
    out.append(GaugeMetricFamily("tasuki_running_tasks", "Tasks running on a worker now",
                                 value=status.get("running", 0)))
    finished = CounterMetricFamily("tasuki_tasks_finished", "Tasks ended since the head started, by outcome",
                                   labels=["outcome"])
    counts = status.get("finished", {})
    for outcome in OUTCOMES:
        finished.add_metric([outcome], counts.get(outcome, 0))
    out.append(finished)
    latency = status.get("latency", {"buckets": [], "sum": 0.0})
    histogram = HistogramMetricFamily("tasuki_task_latency_seconds", "Seconds from submission to the end of a task")
    histogram.add_metric([], cumulative_buckets(latency["buckets"]), latency["sum"])
    out.append(histogram)
    out.append(GaugeMetricFamily("tasuki_objects", "Objects the head tracks", value=status.get("objects", 0)))
    actors = GaugeMetricFamily("tasuki_actors", "Actors by state", labels=["state"])
    by_actor_state = dict.fromkeys(ACTOR_STATES, 0)     # every state, 0 too: a dashboard shows 0, not "No data"
    for actor in status.get("actors", []):
        state = actor["state"].lower()
        by_actor_state[state] = by_actor_state.get(state, 0) + 1
    for state, count in sorted(by_actor_state.items()):
        actors.add_metric([state], count)
    out.append(actors)
    out.append(GaugeMetricFamily("tasuki_drivers", "Connected drivers (including scrapers of the CLI)",
                                 value=status.get("drivers", 0)))

    nodes = status.get("nodes", [])
    by_state = GaugeMetricFamily("tasuki_nodes", "Nodes by state", labels=["state"])
    for state in NODE_STATES:
        by_state.add_metric([state], sum(1 for n in nodes if n["state"] == state))
    out.append(by_state)
    deaths = CounterMetricFamily("tasuki_node_deaths", "Nodes that stopped heartbeating, by the state they were "
                                 "in: alive (lost) or draining (left after a drain)", labels=["previous_state"])
    for state, count in sorted(status.get("node_deaths", {}).items()):
        deaths.add_metric([state], count)
    out.append(deaths)
    info = GaugeMetricFamily("tasuki_node_info", "One per node: its name, group, ip, state and version",
                             labels=["node", "node_name", "group", "ip", "state", "version", "head"])
    per_node = ["node", "group"]
    workers = GaugeMetricFamily("tasuki_workers", "Worker processes per node", labels=per_node)
    busy = GaugeMetricFamily("tasuki_busy_workers", "Workers running a task, per node", labels=per_node)
    idle = GaugeMetricFamily("tasuki_node_idle_seconds", "Seconds since the node last ran a task "
                             "or held objects (0 while busy)", labels=per_node)
    used = GaugeMetricFamily("tasuki_object_store_used_bytes", "Object store bytes in use", labels=per_node)
    capacity = GaugeMetricFamily("tasuki_object_store_capacity_bytes", "Object store size", labels=per_node)
    spilled = GaugeMetricFamily("tasuki_object_store_spilled_bytes", "Object bytes spilled to disk", labels=per_node)
    total = GaugeMetricFamily("tasuki_resource_total", "Resources a node offers", labels=per_node + ["resource"])
    available = GaugeMetricFamily("tasuki_resource_available", "Resources free now", labels=per_node + ["resource"])
    out.append(node_labels(nodes))
    for n in nodes:
        node, group = n["node_id"], n.get("group", "")
        info.add_metric([node, n.get("node_name", ""), group, n["ip"], n["state"], str(n.get("version")),
                         str(bool(n.get("is_head_node"))).lower()], 1)
        if n["state"] == "dead":          # its last figures are stale; only tasuki_nodes counts it
            continue
        store = n.get("object_store", {})
        workers.add_metric([node, group], n.get("workers", 0))
        busy.add_metric([node, group], n.get("busy_workers", 0))
        idle.add_metric([node, group], n.get("seconds_idle", 0.0))
        used.add_metric([node, group], store.get("used", 0))
        capacity.add_metric([node, group], store.get("capacity", 0))
        spilled.add_metric([node, group], store.get("spilled", 0))
        for resource, amount in sorted(n.get("resources", {}).items()):
            total.add_metric([node, group, resource], amount)
            available.add_metric([node, group, resource], n.get("available", {}).get(resource, 0.0))
    out += [info, workers, busy, idle, used, capacity, spilled, total, available]
    return out


def prometheus_label(key: str) -> str:
    """A node label's key as a Prometheus label name: label_ and the key with every character
    Prometheus does not allow made '_' (zone -> label_zone, topology.kubernetes.io/zone ->
    label_topology_kubernetes_io_zone), as kube-state-metrics writes Kubernetes labels."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def node_labels(nodes: list) -> GaugeMetricFamily:
    """tasuki_node_labels: one series per node that has labels, each label its own Prometheus label
    (not one JSON string: PromQL can select and join on label_zone, never inside a string). Nodes
    without some label leave it empty, which Prometheus reads as absent."""
    keys = sorted({prometheus_label(k) for n in nodes for k in (n.get("labels") or {})})
    family = GaugeMetricFamily("tasuki_node_labels", "One per labelled node: its labels (tasuki start --labels) "
                               "as label_<key>", labels=["node", "node_name", "group", *keys])
    for n in nodes:
        labels = n.get("labels") or {}
        if labels:
            values = {prometheus_label(k): str(v) for k, v in sorted(labels.items())}
            family.add_metric([n["node_id"], n.get("node_name", ""), n.get("group", ""),
                               *(values.get(k, "") for k in keys)], 1)
    return family


class BadRequest(Exception):
    """A request the handler refuses; `code` is the HTTP status to answer (400, 413)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _DeadlineReader(socket.SocketIO):
    """A connection's raw reader: every read waits only until `deadline`, so a request trickled
    in a byte at a time is cut off as surely as an idle connection (a plain socket timeout
    restarts with each byte)."""
    deadline = float("inf")

    def readinto(self, buffer) -> int | None:
        self._sock.settimeout(max(0.001, self.deadline - time.monotonic()))
        return super().readinto(buffer)


class Handler(BaseHTTPRequestHandler):
    server_version = "tasuki"
    sys_version = ""                     # no Python version in the Server header
    protocol_version = "HTTP/1.1"

    @property
    def context(self) -> zmq.Context:
        return self.server.head_context

    def log_message(self, format, *args) -> None:      # no access log on the head's stderr
        pass

    def setup(self) -> None:
        super().setup()
        self.rfile.close()               # replaced by a reader that keeps the request's deadline
        self.reader = _DeadlineReader(self.connection, "rb")
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.deadline = time.monotonic() + REQUEST_TIMEOUT_S      # for this whole request
        super().handle_one_request()     # a read past the deadline raises TimeoutError: it closes

    # --- responses ----------------------------------------------------------------------
    def reply(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.connection.settimeout(REQUEST_TIMEOUT_S)    # the reader's deadline is for reading
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, code: int, value) -> None:
        self.reply(code, json.dumps(value, indent=1).encode() + b"\n", "application/json")

    def reply_error(self, code: int, message: str) -> None:
        self.reply_json(code, {"error": message})

    # --- routes -------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path.startswith("/api/v1/jobs"):
                return self.jobs_get(path)
            if path == "/metrics":
                registry = CollectorRegistry(auto_describe=False)
                registry.register(HeadCollector(self.context))
                self.reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ask_head(self.context, "status", timeout_ms=2_000)
                self.reply(200, b"ok\n", "text/plain; charset=utf-8")
            elif path in ("/api/v1/status", "/api/v1/demand", "/api/v1/nodes"):
                answer = ask_head(self.context, path.rsplit("/", 1)[1])
                self.reply_json(500 if isinstance(answer, dict) and "error" in answer else 200, answer)
            else:
                self.reply_error(404, f"no such endpoint {path!r}; try /metrics, /healthz, /api/v1/status, "
                                      f"/api/v1/demand, /api/v1/nodes or POST /api/v1/nodes/ID/drain")
        except HeadUnavailable as e:
            self.reply_error(503, str(e))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            length = self.body_length()
        except BadRequest as e:
            self.close_connection = True     # the body is not read: the connection cannot carry on
            return self.reply_error(e.code, str(e))
        if not self.authorized(self.command):      # nothing of a stranger's body is read
            return
        try:
            body = self.read_body(length)
        except BadRequest as e:
            self.close_connection = True
            return self.reply_error(e.code, str(e))
        if path.startswith("/api/v1/jobs") and self.command == "POST":
            return self.jobs_post(path.rstrip("/"), body)
        match = DRAIN_PATH.match(path)
        if match is None:
            return self.reply_error(404, f"no such endpoint {path!r}; POST or DELETE only /api/v1/nodes/ID/drain")
        try:
            options = json.loads(body) if body.strip() else {}
            if not isinstance(options, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return self.reply_error(400, f"bad drain request: {e}. Send no body, {{\"if_idle\": true}} "
                                         f"or {{\"cancel\": true}}")
        try:
            self.drain(match.group(1), bool(options.get("if_idle", False)),
                       self.command == "DELETE" or bool(options.get("cancel", False)))
        except HeadUnavailable as e:
            self.reply_error(503, str(e))

    do_DELETE = do_POST       # DELETE .../drain cancels, as POST {"cancel": true} does

    def drain(self, node_id: str, if_idle: bool, cancel: bool = False) -> None:
        nodes = ask_head(self.context, "nodes")
        if node_id not in {n["node_id"] for n in nodes}:
            known = ", ".join(n["node_id"] for n in nodes) or "none"
            return self.reply_error(404, f"no node {node_id!r} in this cluster (nodes: {known})")
        answer = ask_head(self.context, "drain", {"node_id": node_id, "if_idle": if_idle, "cancel": cancel})
        if cancel and "error" in answer and "cancelled" in answer:     # a leaving node: cannot be cancelled
            return self.reply_json(409, answer)
        if "error" in answer:
            return self.reply_error(404 if answer["error"].startswith("KeyError") else 500, answer["error"])
        if answer.get("refused"):
            answer["error"] = (f"node {node_id} runs {answer.get('running_tasks')} task(s); it was not drained "
                               f"(if_idle was set). Retry when it is idle, or drain without if_idle.")
            return self.reply_json(409, answer)
        self.reply_json(200, answer)

    # --- jobs (job_manager.py) ---------------------------------------------------------------
    def authorized(self, what: str) -> bool:
        """Whether the request carries the cluster token; else answers 401 (its body unread) and closes."""
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode()):
            return True
        self.close_connection = True
        self.reply_error(401, f"{what} needs the cluster token: send the header 'Authorization: Bearer <token>' "
                              f"(the token `tasuki start --head` printed)")
        return False

    @property
    def jobs(self):
        from .job_manager import JobRefused
        if self.server.jobs is None:
            raise JobRefused(404, "this head runs no job manager (it serves no HTTP port of its own)")
        return self.server.jobs

    def jobs_get(self, path: str) -> None:
        from .job_manager import JobRefused
        if not self.authorized("the jobs API"):
            return
        match = JOB_PATH.match(path)
        try:
            if match is None or match.group(1) == "packages" or match.group(2) == "stop":
                raise JobRefused(404, f"no such endpoint GET {path!r}; GET /api/v1/jobs, /api/v1/jobs/ID or "
                                    f"/api/v1/jobs/ID/logs?offset=N&follow=1")
            job_id, what = match.groups()
            if job_id is None:
                return self.reply_json(200, self.jobs.list())
            if what is None:
                return self.reply_json(200, self.jobs.get(job_id))
            query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
            offset = query.get("offset", ["0"])[-1]
            if not offset.isdigit():
                raise JobRefused(400, f"offset must be a byte offset (a whole number >= 0), got {offset!r}")
            first, data = self.jobs.read_logs(job_id, int(offset))
            if query.get("follow", ["0"])[-1] not in ("1", "true", "yes"):
                return self.reply(200, data, "text/plain; charset=utf-8", {"X-Tasuki-Log-Offset": str(first)})
        except JobRefused as e:
            return self.reply_error(e.code, str(e))
        self.stream_logs(job_id, first)

    def stream_logs(self, job_id: str, offset: int) -> None:
        """The job's output from `offset` in chunks as it comes, until the job has ended."""
        self.connection.settimeout(REQUEST_TIMEOUT_S)    # a reader that stops reading is dropped
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Tasuki-Log-Offset", str(offset))
        self.end_headers()
        for data in self.jobs.follow_logs(job_id, offset):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def jobs_post(self, path: str, body: bytes) -> None:
        from .job_manager import JobRefused
        match = JOB_PATH.match(path)
        try:
            if match is None or match.group(2) == "logs" or (match.group(1) and match.group(2) is None):
                raise JobRefused(404, f"no such endpoint POST {path!r}; POST /api/v1/jobs or /api/v1/jobs/ID/stop")
            if match.group(1) is not None:
                return self.reply_json(200, self.jobs.stop(match.group(1)))
            try:
                submission = json.loads(body)
            except ValueError as e:
                raise JobRefused(400, f"a job submission must be JSON ({e})") from None
            self.reply_json(201, {"job_id": self.jobs.submit(submission)})
        except JobRefused as e:
            self.reply_error(e.code, str(e))

    def handle_expect_100(self) -> bool:
        """A client that waits for '100 Continue' before sending its body (curl -T does for large files)
        is refused first when its upload would be, so that it sends nothing."""
        if self.command == "PUT" and not self.upload_allowed():
            self.close_connection = True
            return False
        return super().handle_expect_100()

    def upload_allowed(self) -> bool:
        """Whether a PUT may send its body, from its headers alone: the token, the path, the size
        (413 naming the limit); else answers why."""
        from .job_manager import JobRefused
        if not self.authorized("uploading a package"):
            return False
        path = self.path.split("?", 1)[0]
        try:
            if not PACKAGE_PATH.match(path):
                raise JobRefused(404, f"no such endpoint PUT {path!r}; PUT /api/v1/jobs/packages/SHA256")
            self.jobs.check_package_size(self.upload_length())
        except JobRefused as e:
            self.reply_error(e.code, str(e))
            return False
        return True

    def upload_length(self) -> int | None:
        value = (self.headers.get("Content-Length") or "").strip()
        return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None

    def do_PUT(self) -> None:
        from .job_manager import JobRefused
        if not self.upload_allowed():
            return self.finish_unread()
        sha, length = PACKAGE_PATH.match(self.path.split("?", 1)[0]).group(1), self.upload_length()
        try:
            self.reader.deadline = time.monotonic() + REQUEST_TIMEOUT_S + length / UPLOAD_MIN_RATE
            created, size = self.jobs.store_package(sha, length, self.rfile.read)
            self.reply_json(201 if created else 200, {"package": sha, "bytes": size})
        except JobRefused as e:
            self.close_connection = True
            self.reply_error(e.code, str(e))

    def finish_unread(self) -> None:
        """After answering a request whose body was not read: stop sending, then read and drop what the
        client still sends for up to LINGER_S. Closing with unread data would reset the connection, and a
        reset can lose our answer in the client's kernel before the client reads it."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while time.monotonic() < deadline:
                self.connection.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.connection.recv(1 << 16):
                    break
        except OSError:
            pass

    def body_length(self) -> int:
        """The request's Content-Length (0 when absent); BadRequest 400 or 413 when it cannot be read."""
        value = (self.headers.get("Content-Length") or "0").strip()
        if not (value.isascii() and value.isdigit()):
            raise BadRequest(400, f"Content-Length must be a number of bytes, got {value[:40]!r}")
        if len(value) > 9 or int(value) > MAX_BODY:          # (len first: int() of 5000 digits raises)
            raise BadRequest(413, f"the body is {value[:40]} bytes; at most {MAX_BODY} are read")
        return int(value)

    def read_body(self, length: int) -> bytes:
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise BadRequest(400, f"the body ended after {len(body)} of the {length} bytes its Content-Length gave")
        return body


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; one line in the log per failure."""
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 2 * MAX_CONNECTIONS    # listen() backlog: a burst is accepted and answered, not dropped
    head_context: zmq.Context
    token: str
    jobs: object = None                      # the head's JobManager (job_manager.py), or None
    log: Callable[[str], None]

    def __init__(self, address: tuple[str, int], handler) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: socket.socket, client_address) -> None:
        if self.slots.acquire(blocking=False):
            return super().process_request(request, client_address)
        try:                                  # full: say so (fits the empty send buffer) and close
            request.setblocking(False)
            request.send(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):    # resets and timeouts are the client's business
            self.log(f"tasuki head: an HTTP request from {client_address[0]} failed: "
                     f"{type(error).__name__}: {str(error)[:200]}")


def serve_http(context: zmq.Context, host: str, port: int, token: str, log: Callable[[str], None],
               jobs=None) -> str:
    """Serve metrics and the JSON API in daemon threads; returns the "host:port" bound (port 0: any).
    `log` writes one line to the head's log (rate-limited by the caller); `jobs` is the JobManager."""
    try:
        server = _Server((host, port), Handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise SystemExit(f"tasuki head: the metrics port {host}:{port} is already in use. Stop what listens "
                             f"there (another tasuki head? `tasuki stop`), or pick another port with "
                             f"--metrics-port (0 picks a free one).") from None
        raise SystemExit(f"tasuki head: cannot serve metrics on {host}:{port}: {e}") from None
    server.head_context = context
    server.token = token
    server.log = log
    server.jobs = jobs
    threading.Thread(target=server.serve_forever, name="tasuki-http", daemon=True).start()
    return f"{host}:{server.server_address[1]}"
