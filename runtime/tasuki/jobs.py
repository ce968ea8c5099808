"""The jobs client: submit a script to a cluster's head over HTTP, follow it, stop it.

    from tasuki.jobs import JobClient
    client = JobClient("http://head:8080")                 # token: TASUKI_TOKEN or the local cluster file's
    job_id = client.submit("python train.py --epochs 3", working_dir=".", env={"MODE": "fast"}, pip=["tqdm"])
    for line in client.follow_logs(job_id):
        print(line, end="")
    print(client.wait(job_id)["status"])                   # SUCCEEDED, FAILED or STOPPED

It speaks the head's jobs API (served beside /metrics on the head's HTTP port, see the jobs routes in
metrics.py) and nothing else; `tasuki job ...` (job_cli.py) is built on it. Standard library only, so a
laptop needs no more than tasuki itself to submit.

    submit:  zip the working directory (skipping SKIP_DIRS) -> sha256 -> PUT /api/v1/jobs/packages/<sha256>
             -> POST /api/v1/jobs {"entrypoint", "working_dir": <sha256>, "env", "pip", "job_id", "metadata"}
    follow_logs: GET /api/v1/jobs/<id>/logs?offset=N&follow=1, a chunked stream that ends with the job;
             a dropped connection is resumed from the byte after the last one received (the server says
             where a response starts in X-Tasuki-Log-Offset: logs rotate, so it may start later)

Where the API is (resolve_endpoint, pure): an explicit address, else TASUKI_ADDRESS, else the HTTP
address `tasuki start --head` recorded in the local cluster file. "http(s)://HOST:PORT[/prefix]" and
"HOST:PORT" name the HTTP port; "tasuki://HOST:PORT" and "tcp://HOST:PORT" name the head's runtime port,
which only the local cluster file can translate. Every failure raises JobError (a ClusterError) with
the server's message and the HTTP status.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.parse
import zipfile
from typing import IO, Iterator

from . import config
from .exceptions import GetTimeoutError, JobError

DEFAULT_PACKAGE_MAX_BYTES = 100 << 20     # bytes; TASUKI_JOB_PACKAGE_MAX_BYTES (the head enforces its own too)
SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv"})
ENDED = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
REQUEST_TIMEOUT_S = 30.0                  # seconds to connect and for each read of an ordinary request
FOLLOW_READ_TIMEOUT_S = 60.0              # seconds a quiet log stream may stay silent before it is reopened
RECONNECT_S = 30.0                        # seconds follow_logs keeps reopening a lost stream without success
WAIT_POLL_S = (0.05, 1.0)                 # seconds between status polls in wait(): first, then at most
HTTP_SCHEMES = ("http", "https")
RUNTIME_SCHEMES = ("tasuki", "tcp")

__all__ = ["JobClient", "JobError", "resolve_endpoint", "zip_directory"]


# --- where the API is (pure) -------------------------------------------------------------------------
def _host_port(address: str) -> str:
    return address.split("://", 1)[-1].split("/", 1)[0]


def resolve_endpoint(address: str | None, token: str | None, env: dict, cluster: dict | None) -> tuple[str, str]:
    """(base URL of the jobs API, token) from the caller's address and token, the environment (its
    TASUKI_ADDRESS and TASUKI_TOKEN) and the local cluster file's contents (None when there is none).
    Raises JobError saying what to pass when it cannot tell."""
    source = "the address"
    if not address:
        address, source = env.get("TASUKI_ADDRESS"), "TASUKI_ADDRESS"
    cluster = cluster or {}
    metrics = cluster.get("metrics")
    if not address:
        if not cluster.get("address"):
            raise JobError("no tasuki cluster to submit to: pass the head's HTTP address (JobClient(address=...), "
                           "--address or TASUKI_ADDRESS, e.g. http://HEAD:8080), or start one here with "
                           "`tasuki start --head`")
        address, source = cluster["address"], "the local cluster file"
    address = address.strip().rstrip("/")
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    local_runtime = cluster.get("address") and _host_port(cluster["address"]) == _host_port(address)
    if scheme in RUNTIME_SCHEMES or (not scheme and local_runtime):
        if not (local_runtime and metrics):
            raise JobError(
                f"{source} {address!r} is the head's runtime port; the jobs API is served on its HTTP port "
                f"(`tasuki start --metrics-port`, 8080 in Kubernetes pods). Pass that instead, e.g. "
                f"--address http://{_host_port(address).rpartition(':')[0] or 'HEAD'}:{config.DEFAULT_METRICS_PORT}"
                + ("" if local_runtime else " (only the cluster started on this machine can be translated)")
                + ("; the cluster started here has no HTTP port (it was started with --metrics-port -1?)"
                   if local_runtime else ""))
        url = metrics
    elif scheme in HTTP_SCHEMES:
        url = address
    elif scheme:
        raise JobError(f"{source} {address!r}: unknown scheme {scheme!r}; give http://HOST:PORT (the head's "
                       f"HTTP port, 8080 in pods)")
    else:
        url = "http://" + address + ("" if ":" in address.rsplit("]", 1)[-1] else f":{config.DEFAULT_METRICS_PORT}")
    try:
        parsed = urllib.parse.urlsplit(url)
        valid = bool(parsed.hostname) and (parsed.port is not None or ":" not in parsed.netloc.rsplit("]", 1)[-1])
    except ValueError:          # a port that is not a number
        valid = False
    if not valid:
        raise JobError(f"{source} {address!r} must look like http://HOST:PORT, e.g. http://10.0.0.5:8080")
    if not token:
        token = env.get("TASUKI_TOKEN")
    if not token and cluster.get("token") and metrics and _host_port(metrics) == _host_port(url):
        token = cluster["token"]
    if not token:
        raise JobError(f"no token for the jobs API at {url}: pass token=... (--token) or set TASUKI_TOKEN to the "
                       f"cluster's token (`tasuki start --head` printed it; in Kubernetes it is in the Cluster's Secret)")
    return url, token.strip()


# --- the working directory ------------------------------------------------------------------------
def package_max_bytes() -> int:
    """The local limit on a zipped working directory (TASUKI_JOB_PACKAGE_MAX_BYTES, default 100 MiB)."""
    value = config.env("JOB_PACKAGE_MAX_BYTES")
    return int(value) if value not in (None, "") else DEFAULT_PACKAGE_MAX_BYTES


def zip_directory(directory: str, out: IO[bytes], max_bytes: int) -> int:
    """Zip the files under `directory` (paths relative to it, in a stable order, skipping SKIP_DIRS) into
    `out`; returns the zip's size. Raises JobError as soon as the zip grows past `max_bytes`."""
    if not os.path.isdir(directory):
        raise JobError(f"the working directory {directory!r} is not a directory")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(files):
                path = os.path.join(root, name)
                if not os.path.isfile(path):          # a dangling symlink, a socket
                    continue
                archive.write(path, os.path.relpath(path, directory))
                if out.tell() > max_bytes:
                    raise JobError(
                        f"the working directory {os.path.abspath(directory)} zips to more than {max_bytes} bytes "
                        f"({max_bytes / (1 << 20):.4g} MiB, TASUKI_JOB_PACKAGE_MAX_BYTES; the head has its own "
                        f"limit too, default {DEFAULT_PACKAGE_MAX_BYTES >> 20} MiB), at {os.path.relpath(path, directory)}. "
                        f"Leave large data out (read it from shared storage in the job), or raise the limit.")
    return out.tell()


# --- the client -----------------------------------------------------------------------------------
class JobClient:
    """The verbs of the head's jobs API. `address`: "http://HOST:PORT" (or "HOST:PORT", or the
    runtime address "tasuki://HOST:PORT" of the cluster started on this machine); default
    TASUKI_ADDRESS, else the local cluster file. `token`: default TASUKI_TOKEN, else the cluster file's."""

    def __init__(self, address: str | None = None, token: str | None = None) -> None:
        cluster = None
        try:
            cluster = config.read_cluster_file()
        except OSError:        # an unsafe or unreadable session directory: only explicit settings count
            pass
        self.url, self._token = resolve_endpoint(address, token, dict(os.environ), cluster)
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")

    def __repr__(self) -> str:
        return f"JobClient({self.url!r})"

    # --- verbs ---
    def submit(self, entrypoint: str, *, working_dir: str | None = None, env: dict | None = None,
               pip: list | None = None, job_id: str | None = None, metadata: dict | None = None) -> str:
        """Submit `entrypoint` (a shell command line run on the head's machine); returns the job id.
        `working_dir`: a local directory, zipped and uploaded; the job runs inside its copy."""
        body: dict = {"entrypoint": entrypoint, "env": dict(env or {}), "pip": list(pip or []),
                      "metadata": dict(metadata or {})}
        if job_id:
            body["job_id"] = job_id
        if working_dir is not None:
            body["working_dir"] = self.upload(working_dir)
        return self._json("POST", "/api/v1/jobs", body)["job_id"]

    def upload(self, directory: str) -> str:
        """Zip `directory` and PUT it by its sha256 (the head keeps one copy per content); returns the sha256."""
        with tempfile.TemporaryFile() as package:
            size = zip_directory(directory, package, package_max_bytes())
            package.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: package.read(1 << 20), b""):
                digest.update(block)
            package.seek(0)
            sha = digest.hexdigest()
            self._json("PUT", f"/api/v1/jobs/packages/{sha}", package,
                       headers={"Content-Type": "application/zip", "Content-Length": str(size)})
        return sha

    def list(self) -> list[dict]:
        """Every job the head knows, newest first."""
        return self._json("GET", "/api/v1/jobs")

    def status(self, job_id: str) -> dict:
        """The job's record: status, exit_code, start_time, end_time, message... (JOBS_API.md)."""
        return self._json("GET", f"/api/v1/jobs/{_quote(job_id)}", job_id=job_id)

    def logs(self, job_id: str) -> str:
        """The job's output so far (stdout, stderr and pip's output; the oldest may have rotated away)."""
        response, conn = self._open("GET", f"/api/v1/jobs/{_quote(job_id)}/logs?offset=0", job_id=job_id)
        try:
            return response.read().decode(errors="replace")
        finally:
            conn.close()

    def follow_logs(self, job_id: str) -> Iterator[str]:
        """The job's output line by line as it comes, until the job ends (the last line may lack its
        newline). A dropped connection is reopened from the next byte, for up to RECONNECT_S."""
        offset, pending = 0, b""
        give_up = time.monotonic() + RECONNECT_S
        delay = WAIT_POLL_S[0]
        while True:
            try:
                response, conn = self._open("GET", f"/api/v1/jobs/{_quote(job_id)}/logs?offset={offset}&follow=1",
                                            job_id=job_id, timeout=FOLLOW_READ_TIMEOUT_S)
            except JobError as e:
                if e.status_code is not None or time.monotonic() > give_up:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, WAIT_POLL_S[1])
                continue
            give_up, delay = time.monotonic() + RECONNECT_S, WAIT_POLL_S[0]
            start = int(response.getheader("X-Tasuki-Log-Offset") or offset)
            if start != offset:         # rotated away while we were not reading: a partial line is gone too
                pending = b""
            offset = start
            clean = False
            try:
                while True:
                    block = response.read1(1 << 16)
                    if not block:
                        clean = True
                        break
                    offset += len(block)
                    *lines, pending = (pending + block).split(b"\n")
                    for line in lines:
                        yield line.decode(errors="replace") + "\n"
            except (OSError, http.client.HTTPException):
                pass                    # dropped (or silent past FOLLOW_READ_TIMEOUT_S): reopen from `offset`
            finally:
                conn.close()
            if clean:
                if self.status(job_id)["status"] in ENDED:
                    if pending:
                        yield pending.decode(errors="replace")
                    return
                time.sleep(delay)       # the stream ended early (a proxy's limit?): reopen, but not in a busy loop
                delay = min(delay * 2, WAIT_POLL_S[1])

    def stop(self, job_id: str) -> dict:
        """Stop the job: its driver's process group, then its tasks and non-detached actors. Returns the
        job's record; JobError with status_code 409 if it had already ended."""
        return self._json("POST", f"/api/v1/jobs/{_quote(job_id)}/stop", {}, job_id=job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job's record once it has ended; GetTimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = WAIT_POLL_S[0]
        while True:
            job = self.status(job_id)
            if job["status"] in ENDED:
                return job
            if deadline is not None and time.monotonic() + delay > deadline:
                raise GetTimeoutError(f"job {job_id} is still {job['status']} after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_S[1])

    # --- HTTP ---
    def _open(self, method: str, path: str, body=None, *, headers: dict | None = None, job_id: str | None = None,
              timeout: float = REQUEST_TIMEOUT_S) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """A response with status 2xx and its connection (the caller closes it), or JobError."""
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        try:
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
            except OSError:
                if not conn.sock:
                    raise                           # never connected
                # the head answered before taking the whole body (413, 401) and hung up: read its answer
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            raise JobError(
                f"cannot reach the tasuki jobs API at {self.url} ({reason}). Check that the head runs, that this "
                f"is its HTTP port (`tasuki start --metrics-port`, 8080 in Kubernetes pods; its runtime port, 6380, "
                f"does not serve HTTP) and that this machine can reach it; pass --address http://HOST:PORT "
                f"(or TASUKI_ADDRESS).") from None
        if response.status < 300:
            return response, conn
        try:
            text = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            text = ""
        finally:
            conn.close()
        raise _error(response.status, text, method, self.url + path.split("?")[0], job_id)

    def _json(self, method: str, path: str, body=None, *, headers: dict | None = None, job_id: str | None = None):
        if isinstance(body, dict):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        response, conn = self._open(method, path, body, headers=headers, job_id=job_id)
        try:
            text = response.read()
        finally:
            conn.close()
        try:
            return json.loads(text)
        except ValueError:
            raise JobError(f"{method} {self.url}{path} answered {response.status} with something that is not "
                           f"JSON ({text[:200]!r}): is this the head's HTTP port?", status_code=response.status) from None


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _error(status: int, text: str, method: str, url: str, job_id: str | None) -> JobError:
    """The JobError for an HTTP error answer: the server's JSON message, with what to do for the
    statuses people meet (a wrong token, an unknown job)."""
    try:
        message = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status} from {method} {url}" + (f": {text.strip()[:300]}" if text.strip() else "")
    if status == 401:
        message = (f"the jobs API at {url.split('/api/', 1)[0]} refused the token (401: {message}). Check the "
                   f"token: TASUKI_TOKEN or --token must be the cluster's (`tasuki start --head` printed it; in "
                   f"Kubernetes it is in the Cluster's Secret).")
    elif status == 404 and job_id is not None:
        message += " (see the job ids with `tasuki job list` or JobClient.list())"
    elif status == 404:
        message += (f" (is {url.split('/api/', 1)[0]} a tasuki head's HTTP port, and does that head serve the jobs "
                     f"API? Heads older than `tasuki job` do not)")
    return JobError(message, status_code=status, job_id=job_id)
