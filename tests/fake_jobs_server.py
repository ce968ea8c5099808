"""A fake of the head's jobs API (JOBS_API.md), in memory, for the jobs client's and the operator's tests.

    with FakeJobsServer("127.42.0.1", token="t0k") as server:
        job_id = JobClient(server.url, token="t0k").submit("python x.py")
        server.append_log(job_id, "hello\\n")          # what the driver printed
        server.finish(job_id, "SUCCEEDED", 0)          # the driver exited
        assert server.jobs[job_id]["status"] == "SUCCEEDED"

It answers every route of the contract with its status codes (401 without the token, 404, 409, 413,
400 for a bad sha256 or field) and runs nothing: a submitted job is RUNNING (PENDING when it has pip
requirements) until the test calls finish(). With `run=True` it runs the entrypoint for real
(`sh -c`, in the unpacked package, with the job's env and TASUKI_JOB_ID), streams its output into the
logs and ends the job with its exit code; stop() then kills its process group.

State: `jobs` (job id -> the job's record as the API shows it, but with the env unmasked), `packages`
(sha256 -> the zip's bytes), `requests` ((method, path with query) of each request, in order).
`serve(fake, handler, method, path)` answers one request on another server's handler, so a fake
head can serve the jobs API beside its own routes, as the real head does. `break_streams()` hangs up every open follow stream mid-response (no final chunk), as a dropped
connection does. Logs keep at most `log_max_bytes` (older bytes drop, offsets stay absolute). One lock
and condition guard all state; the server runs in daemon threads until close().
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")
PACKAGE = re.compile(r"^/api/v1/jobs/packages/([^/]+)$")
JOB = re.compile(r"^/api/v1/jobs/([^/]+)$")
LOGS = re.compile(r"^/api/v1/jobs/([^/]+)/logs$")
STOP = re.compile(r"^/api/v1/jobs/([^/]+)/stop$")


class FakeJobsServer:
    """See the module docstring. port=0 picks a free port; `url` is "http://host:port"."""

    def __init__(self, host: str = "127.42.0.1", port: int = 0, token: str = "fake-token", *, run: bool = False,
                 package_max_bytes: int = 100 << 20, log_max_bytes: int = 64 << 20) -> None:
        self.token = token
        self.run = run
        self.package_max_bytes = package_max_bytes
        self.log_max_bytes = log_max_bytes
        self.jobs: dict[str, dict] = {}
        self.packages: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.cond = threading.Condition()
        self._logs: dict[str, bytearray] = {}
        self._dropped: dict[str, int] = {}          # job id -> bytes rotated away
        self._procs: dict[str, subprocess.Popen] = {}
        self._breaks = 0                            # bumped by break_streams()
        self._dirs: list[str] = []
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.fake = self
        self.url = f"http://{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-jobs-http", daemon=True).start()

    def __enter__(self) -> FakeJobsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for job_id, proc in list(self._procs.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self.break_streams()
        self._server.shutdown()
        self._server.server_close()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)

    # --- driving jobs from a test ---
    def append_log(self, job_id: str, text: str | bytes) -> None:
        """Add to the job's output, as its driver printing would."""
        data = text.encode() if isinstance(text, str) else text
        with self.cond:
            log = self._logs[job_id]
            log += data
            excess = len(log) - self.log_max_bytes
            if excess > 0:
                del log[:excess]
                self._dropped[job_id] += excess
            self.cond.notify_all()

    def finish(self, job_id: str, status: str, exit_code: int | None = None, message: str = "") -> None:
        """End the job as SUCCEEDED, FAILED or STOPPED (its follow streams then end)."""
        assert status in ENDED, status
        with self.cond:
            job = self.jobs[job_id]
            if job["status"] in ENDED:
                return
            now = time.time()
            job.update(status=status, exit_code=exit_code, end_time=now, message=message or job["message"],
                       start_time=job["start_time"] or now)
            self.cond.notify_all()

    def break_streams(self) -> None:
        with self.cond:
            self._breaks += 1
            self.cond.notify_all()

    def log_bytes(self, job_id: str) -> bytes:
        with self.cond:
            return bytes(self._logs[job_id])

    # --- the API (called by the handler under no lock) ---
    def view(self, job: dict) -> dict:
        env = {k: "***" if any(w in k.upper() for w in SECRET_WORDS) else v for k, v in job["env"].items()}
        return {**job, "env": env}

    def create(self, body: dict) -> tuple[int, dict]:
        entrypoint = body.get("entrypoint")
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            return 400, {"error": f"entrypoint must be a non-empty command line, got {entrypoint!r}"}
        for field, kind in (("env", dict), ("metadata", dict), ("pip", list)):
            if not isinstance(body.get(field, kind()), kind):
                return 400, {"error": f"{field} must be a JSON {'object' if kind is dict else 'array'}"}
        package = body.get("working_dir")
        with self.cond:
            if package is not None and package not in self.packages:
                return 400, {"error": f"working_dir {package!r} was not uploaded: PUT /api/v1/jobs/packages/<sha256> first"}
            job_id = body.get("job_id") or f"job-{secrets.token_hex(6)}"
            if job_id in self.jobs:
                return 409, {"error": f"a job {job_id!r} exists already; choose another job_id or leave it out"}
            now = time.time()
            pip = list(body.get("pip", []))
            self.jobs[job_id] = {
                "job_id": job_id, "status": "PENDING" if pip else "RUNNING", "entrypoint": entrypoint, "message": "",
                "exit_code": None, "submitted_at": now, "start_time": None if pip else now, "end_time": None,
                "metadata": dict(body.get("metadata", {})), "env": dict(body.get("env", {})), "pip": pip,
                "working_dir": package, "driver_pid": None}
            self._logs[job_id], self._dropped[job_id] = bytearray(), 0
        if self.run:
            self._start(job_id)
        return 201, {"job_id": job_id}

    def stop(self, job_id: str) -> tuple[int, dict]:
        with self.cond:
            job = self.jobs[job_id]
            if job["status"] in ENDED:
                return 409, {"error": f"job {job_id} has already ended ({job['status']}); nothing to stop"}
            proc = self._procs.get(job_id)
        self.finish(job_id, "STOPPED", None, "stopped by request")      # first: the driver's exit must not say FAILED
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        with self.cond:
            return 200, self.view(self.jobs[job_id])

    def _start(self, job_id: str) -> None:
        job = self.jobs[job_id]
        cwd = tempfile.mkdtemp(prefix="fake-job-")
        self._dirs.append(cwd)
        if job["working_dir"]:
            with zipfile.ZipFile(io.BytesIO(self.packages[job["working_dir"]])) as archive:
                archive.extractall(cwd)
        env = {**os.environ, **job["env"], "TASUKI_JOB_ID": job_id}
        proc = subprocess.Popen(job["entrypoint"], shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        with self.cond:
            job["driver_pid"] = proc.pid
            self._procs[job_id] = proc

        def pump() -> None:
            for block in iter(lambda: proc.stdout.read1(1 << 16), b""):
                self.append_log(job_id, block)
            code = proc.wait()
            self.finish(job_id, "SUCCEEDED" if code == 0 else "FAILED", code)

        threading.Thread(target=pump, name=f"fake-job-{job_id}", daemon=True).start()


def serve(fake: FakeJobsServer, h: BaseHTTPRequestHandler, method: str, path: str) -> bool:
    """Answer one jobs API request on handler `h` (an HTTP/1.1 BaseHTTPRequestHandler) from `fake`;
    `path` is the request's path and query without any prefix. Returns False, having sent nothing, for a
    path outside /api/v1/jobs, so another fake (FakeHead) can serve the jobs API beside its own routes:
        if fake_jobs_server.serve(self.server.jobs, self, "GET", self.path): return"""
    url = urllib.parse.urlsplit(path)
    if not (url.path == "/api/v1/jobs" or url.path.startswith("/api/v1/jobs/")):
        return False
    fake.requests.append((method, path))
    query = urllib.parse.parse_qs(url.query)
    given = h.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {fake.token}".encode()):
        h.close_connection = True
        _send(h, 401, {"error": "missing or wrong token in Authorization: Bearer <token>"})
    elif method == "PUT" and (m := PACKAGE.match(url.path)):
        _put_package(fake, h, m.group(1))
    elif method == "POST" and url.path == "/api/v1/jobs":
        try:
            body = json.loads(_body(h))
        except ValueError:
            body = None
        _send(h, *fake.create(body)) if isinstance(body, dict) else _send(h, 400, {"error": "the body is not a JSON object"})
    elif method == "GET" and url.path == "/api/v1/jobs":
        with fake.cond:
            jobs = sorted(fake.jobs.values(), key=lambda j: j["submitted_at"], reverse=True)
            _send(h, 200, [fake.view(j) for j in jobs])
    else:
        _job_route(fake, h, method, url.path, query)
    return True


def _job_route(fake: FakeJobsServer, h: BaseHTTPRequestHandler, method: str, path: str, query: dict) -> None:
    for pattern, verb in ((JOB, "GET"), (LOGS, "GET"), (STOP, "POST")):
        m = pattern.match(path)
        if not (m and method == verb):
            continue
        job_id = urllib.parse.unquote(m.group(1))
        if method == "POST":
            _body(h)
        if job_id not in fake.jobs:
            return _send(h, 404, {"error": f"no job {job_id!r} on this head"})
        if pattern is JOB:
            with fake.cond:
                return _send(h, 200, fake.view(fake.jobs[job_id]))
        if pattern is STOP:
            return _send(h, *fake.stop(job_id))
        return _logs(fake, h, job_id, int(query.get("offset", ["0"])[0]), query.get("follow", ["0"])[0] == "1")
    _body(h)
    _send(h, 404, {"error": f"no route {method} {path}"})


def _send(h: BaseHTTPRequestHandler, status: int, payload) -> None:
    body = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _body(h: BaseHTTPRequestHandler) -> bytes:
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


def _put_package(fake: FakeJobsServer, h: BaseHTTPRequestHandler, sha: str) -> None:
    size = int(h.headers.get("Content-Length") or 0)
    if size > fake.package_max_bytes:          # answered without reading the body, as a head may
        h.close_connection = True
        return _send(h, 413, {"error": f"the package is {size} bytes, over TASUKI_JOB_PACKAGE_MAX_BYTES="
                                       f"{fake.package_max_bytes} on the head"})
    data = h.rfile.read(size)
    if hashlib.sha256(data).hexdigest() != sha:
        return _send(h, 400, {"error": f"the body's sha256 is {hashlib.sha256(data).hexdigest()}, not {sha}"})
    with fake.cond:
        existed = sha in fake.packages
        fake.packages[sha] = data
    _send(h, 200 if existed else 201, {"package": sha, "bytes": size})


def _logs(fake: FakeJobsServer, h: BaseHTTPRequestHandler, job_id: str, offset: int, follow: bool) -> None:
    with fake.cond:
        start = max(offset, fake._dropped[job_id])
        breaks = fake._breaks
    h.send_response(200)
    h.send_header("Content-Type", "text/plain; charset=utf-8")
    h.send_header("X-Tasuki-Log-Offset", str(start))
    if not follow:
        with fake.cond:
            data = bytes(fake._logs[job_id][start - fake._dropped[job_id]:])
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        return
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    sent = start
    while True:
        with fake.cond:
            fake.cond.wait_for(lambda: fake._breaks != breaks or fake.jobs[job_id]["status"] in ENDED
                               or fake._dropped[job_id] + len(fake._logs[job_id]) > sent, timeout=1.0)
            if fake._breaks != breaks:
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)       # no final chunk: a dropped connection
                return
            sent = max(sent, fake._dropped[job_id])
            data = bytes(fake._logs[job_id][sent - fake._dropped[job_id]:])
            ended = fake.jobs[job_id]["status"] in ENDED
        if data:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()
            sent += len(data)
        if ended:
            h.wfile.write(b"0\r\n\r\n")
            return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # chunked log streams

    def log_message(self, *args) -> None:
        pass

    def _serve(self, method: str) -> None:
        if not serve(self.server.fake, self, method, self.path):
            _body(self)
            _send(self, 404, {"error": f"no route {method} {self.path}"})

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")
