"""The operator's one HTTP client for a tasuki head: read its demand and node table, ask it to drain.

The kopf timer (handlers.py) builds a `HeadAPI` per Cluster from `head_url(...)` (the `--head-url`
template, default DEFAULT_HEAD_URL) and the token in the Cluster's Secret, calls `demand()` and
passes the answer to `autoscaler.plan`, then `drain()`s the nodes the plan names. This module does
I/O (sockets) but imports neither kopf nor kubernetes nor zmq: the standard library only.

The head's side is runtime/tasuki/metrics.py:

  GET  {base}/api/v1/demand            {"pending": [{"shape", "count", "feasible"[, "label_selector"]}],
                                        "requested": [{"shape", "count"}], "nodes": [...],
                                        "waiting_for_dependencies", "version"}
  GET  {base}/api/v1/nodes             [{"node_id", "node_name", "group", "state", "busy_workers",
                                         "seconds_idle", "version", ...}]
  POST {base}/api/v1/nodes/{id}/drain  Authorization: Bearer <token>, body {"if_idle": true}
                                       200 {"node_id", "state", "running_tasks", "objects", "drained"}
                                       409 (busy, if_idle set) {"refused": true, "running_tasks", "error"}

  The jobs API (/work/wt/JOBS_API.md; job_controller.py's calls), every request with the token:
  PUT  {base}/api/v1/jobs/packages/{sha256}   a zip of the working directory → 201/200 {"package", "bytes"}
  POST {base}/api/v1/jobs                     {"entrypoint", "job_id", "working_dir", "env", "pip",
                                               "metadata"} → 201 {"job_id"}; 409 when job_id exists
  GET  {base}/api/v1/jobs/{id}                the job: {"job_id", "status", "message", "exit_code",
                                               "start_time", "end_time", ...}; 404
  POST {base}/api/v1/jobs/{id}/stop           200 the job; 409 when it already ended

The head has no endpoint that undoes a drain, so neither does this client.

Exceptions (both carry the URL; neither ever carries the token):

  HeadAPIError
   ├── HeadUnreachable   no HTTP answer: DNS, connection refused or reset, timeout
   └── HeadError         an HTTP answer other than 2xx (and other than the drain's 409), or one
                         that is not the JSON the head sends; `.status` and `.message`

Every request is bounded by `timeout_s`, all of it together: name resolution (run in a helper
thread so a hung resolver cannot hold the caller), connect, send and every read of the answer
share one deadline; a head that trickles bytes is cut off at it (over https, each socket
operation is bounded by what is left instead). There are no retries: the caller's next timer tick
is the retry. Proxy variables (HTTP_PROXY...) are ignored, and redirects are not followed: the
head is reached directly or not at all.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import math
import socket
import string
import threading
import time
import urllib.parse
from dataclasses import dataclass

DEFAULT_HEAD_URL = "http://{service}.{namespace}.svc:{port}"
PLACEHOLDERS = ("name", "namespace", "service", "port")
DEFAULT_TIMEOUT_S = 5.0                # seconds: one whole request, DNS to the last byte
MAX_ANSWER_BYTES = 64 * 1024 * 1024    # bytes: the largest answer read (demand of ~50,000 nodes)
READ_CHUNK = 64 * 1024                 # bytes read per call
USER_AGENT = "tasuki-operator"
JOBS_PATH = "/api/v1/jobs"


# --- errors -----------------------------------------------------------------------------------------
class HeadAPIError(Exception):
    """The head's HTTP API could not give an answer (see the subclasses). `.url` is what was asked."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class HeadUnreachable(HeadAPIError):
    """No HTTP answer from the head: the name does not resolve, nothing listens, the connection
    was reset, or no answer came within the timeout. `.cause` says which."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(url, f"cannot reach the tasuki head at {url}: {cause}. Check that the head pod is "
                              f"running and ready, and that --head-url (TASUKI_OPERATOR_HEAD_URL) points at "
                              f"its HTTP port.")
        self.cause = cause


class HeadError(HeadAPIError):
    """The head answered, but not with success: `.status` (the HTTP status; 0 when the answer was
    not HTTP/JSON the client understands) and `.message` (the answer's "error", or its start)."""

    def __init__(self, url: str, status: int, message: str) -> None:
        what = f"HTTP {status}" if status else "a malformed answer"
        super().__init__(url, f"the tasuki head at {url} answered {what}: {message}")
        self.status = status
        self.message = message


# --- the URL template -------------------------------------------------------------------------------
def head_url(template: str, *, name: str, namespace: str, service: str, port: int) -> str:
    """The head's base URL from `template` (e.g. DEFAULT_HEAD_URL), without a trailing slash.

    Placeholders: {name} (the Cluster's name), {namespace}, {service} (the head Service's name),
    {port} (the head's HTTP/metrics port); '{{' and '}}' are literal braces. The template is a
    base URL, path prefix included: the API paths are appended to it. ValueError names an unknown
    placeholder, or a result that is not an http(s) URL with a host.
    """
    values = {"name": name, "namespace": namespace, "service": service, "port": port}
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:            # a lone '{' or '}'
        raise ValueError(f"head URL template {template!r}: {e}; write a literal brace as '{{{{' or '}}}}'") from None
    for field, spec, conversion in fields:
        if field not in values:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"head URL template {template!r} has an unknown placeholder {{{field}}}; "
                             f"it may use {known}")
        if spec or conversion:
            raise ValueError(f"head URL template {template!r}: placeholder {{{field}}} takes no format "
                             f"spec or conversion; write it as {{{field}}}")
    url = template.format(**values).rstrip("/")
    split_url(url, what=f"the head URL {url!r} (from the template {template!r})")
    return url


def split_url(url: str, what: str = "the head URL") -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of an http(s) base URL; ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must look like http://HOST:PORT[/prefix], got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must have no ?query or #fragment, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{what} has a bad port: {url!r}") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


# --- answers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrainAnswer:
    """The head's answer to a drain request.

    `drained`: the node runs no task, hosts no live actor and holds no object stored nowhere
    else (its pod may be deleted); `refused`: if_idle was set and the node was busy (HTTP 409),
    so nothing changed, or a cancel was refused (the node is leaving on SIGTERM); `state`: the
    node's state after the request ("draining" once drained or draining, "alive" after a
    cancel); `objects`: objects the node holds (None when the head did not say: a refused
    answer); `message`: the head's explanation when refused, else "". What is left there (None
    when the head did not say): `actors`, `objects_to_move`, `bytes_to_move`; `cancelled`: a
    cancel put the node back to alive.
    """
    node_id: str
    drained: bool
    refused: bool
    running_tasks: int
    state: str
    objects: int | None
    message: str = ""
    actors: int | None = None
    objects_to_move: int | None = None
    bytes_to_move: int | None = None
    cancelled: bool = False

    @classmethod
    def from_json(cls, answer: dict, node_id: str) -> DrainAnswer:
        return cls(node_id=str(answer.get("node_id", node_id)), drained=bool(answer.get("drained", False)),
                   refused=bool(answer.get("refused", False)), running_tasks=int(answer.get("running_tasks", 0)),
                   state=str(answer.get("state", "")),
                   objects=int(answer["objects"]) if answer.get("objects") is not None else None,
                   message=str(answer.get("error", "")), cancelled=bool(answer.get("cancelled", False)),
                   **{k: int(answer[k]) for k in ("actors", "objects_to_move", "bytes_to_move")
                      if answer.get(k) is not None})


# --- the client -------------------------------------------------------------------------------------
class HeadAPI:
    """A client for one head's HTTP API. Cheap to build (no connection is kept: one per request).

    `token` is the cluster token (from the Cluster's Secret), sent with the drain request and every
    jobs request (the jobs API wants it on reads too);
    None or "" sends none (the head then answers 401). It never appears in a message or repr.
    """

    def __init__(self, base_url: str, token: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.scheme, self.host, self.port, self.prefix = split_url(self.base_url)
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        if token and not (token.isascii() and token.isprintable()):
            raise ValueError("the cluster token has a character an HTTP header cannot carry (a line break, "
                             "a control or non-ASCII character); check the token in the Cluster's Secret "
                             "(the token is not shown)")
        self._token = token or ""

    def __repr__(self) -> str:
        return f"HeadAPI({self.base_url!r}, token={'<set>' if self._token else None}, timeout_s={self.timeout_s:g})"

    def demand(self) -> dict:
        """GET /api/v1/demand: pending bundles by shape and the node table (autoscaler.plan's input)."""
        answer = self._json("GET", "/api/v1/demand")[1]
        if not (isinstance(answer, dict) and isinstance(answer.get("pending"), list)
                and isinstance(answer.get("nodes"), list)):
            raise HeadError(self.base_url + "/api/v1/demand", 0,
                            f"expected an object with 'pending' and 'nodes' lists, got {_start(answer)}")
        return answer

    def nodes(self) -> list[dict]:
        """GET /api/v1/nodes: the head's node table, one dict per node (dead nodes included)."""
        answer = self._json("GET", "/api/v1/nodes")[1]
        if not (isinstance(answer, list) and all(isinstance(n, dict) for n in answer)):
            raise HeadError(self.base_url + "/api/v1/nodes", 0, f"expected a list of nodes, got {_start(answer)}")
        return answer

    def drain(self, node_id: str, if_idle: bool = True) -> DrainAnswer:
        """POST /api/v1/nodes/{node_id}/drain. With `if_idle`, a busy node is not touched: the answer
        is `refused` (the head's 409). Without it the node stops taking work and `drained` turns
        true once its tasks end. HeadError 404 when the head has no such node, 401 for a bad token."""
        path = f"/api/v1/nodes/{urllib.parse.quote(str(node_id), safe='')}/drain"
        status, answer = self._json("POST", path, {"if_idle": bool(if_idle)}, allow=(409,))
        if not isinstance(answer, dict):
            raise HeadError(self.base_url + path, 0, f"expected a JSON object, got {_start(answer)}")
        return DrainAnswer.from_json({**answer, "refused": status == 409 or answer.get("refused", False)},
                                     str(node_id))

    def cancel_drain(self, node_id: str) -> DrainAnswer:
        """POST /api/v1/nodes/{node_id}/drain {"cancel": true}: the node takes work again (the
        operator keeps it after all). `refused` (the head's 409) when its node agent got SIGTERM:
        a node that is leaving cannot be kept."""
        path = f"/api/v1/nodes/{urllib.parse.quote(str(node_id), safe='')}/drain"
        status, answer = self._json("POST", path, {"cancel": True}, allow=(409,))
        if not isinstance(answer, dict):
            raise HeadError(self.base_url + path, 0, f"expected a JSON object, got {_start(answer)}")
        return DrainAnswer.from_json({**answer, "refused": status == 409}, str(node_id))

    # --- jobs -----------------------------------------------------------------------------------
    def upload_package(self, sha256: str, data: bytes) -> None:
        """PUT a working-directory zip under its sha256 (200 when the head has it already)."""
        self._json("PUT", f"{JOBS_PATH}/packages/{sha256}", data, content_type="application/zip")

    def submit_job(self, request: dict) -> bool:
        """POST a job (`request` as the API takes it, job_id included). True when submitted now, False
        when the head already has that job id (409: an earlier try of this submission got through)."""
        status, answer = self._json("POST", JOBS_PATH, request, allow=(409,))
        return status != 409

    def job(self, job_id: str) -> dict:
        """GET one job's status; HeadError with status 404 when the head has no such job."""
        path = f"{JOBS_PATH}/{urllib.parse.quote(job_id, safe='')}"
        answer = self._json("GET", path)[1]
        if not (isinstance(answer, dict) and isinstance(answer.get("status"), str)):
            raise HeadError(self.base_url + path, 0, f"expected a job object with a status, got {_start(answer)}")
        return answer

    def stop_job(self, job_id: str) -> None:
        """POST stop; a job that already ended (409) is left as it is."""
        self._json("POST", f"{JOBS_PATH}/{urllib.parse.quote(job_id, safe='')}/stop", {}, allow=(409,))

    # --- one request ------------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: dict | bytes | None = None, allow: tuple = (),
              content_type: str = "application/json") -> tuple[int, object]:
        """One request; (status, decoded JSON) for 2xx and the `allow`ed statuses, else HeadError."""
        url = self.base_url + path
        status, data = self._request(method, path, body, content_type)
        try:
            answer = json.loads(data) if data.strip() else None
        except ValueError:
            answer = None
            if 200 <= status < 300 or status in allow:
                raise HeadError(url, 0, f"HTTP {status} with a body that is not JSON: {_start(data)}") from None
        if 200 <= status < 300 or status in allow:
            return status, answer
        message = answer.get("error") if isinstance(answer, dict) and answer.get("error") else _start(data)
        raise HeadError(url, status, self._scrub(str(message)))

    def _request(self, method: str, path: str, body: dict | bytes | None,
                 content_type: str = "application/json") -> tuple[int, bytes]:
        url = self.base_url + path
        deadline = time.monotonic() + self.timeout_s
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, "Connection": "close"}
        payload = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self._token and (method != "GET" or path.startswith(JOBS_PATH)):
            headers["Authorization"] = f"Bearer {self._token}"
        cls = _HTTPSConnection if self.scheme == "https" else _HTTPConnection
        conn = cls(self.host, self.port, timeout=self.timeout_s)
        conn.deadline = deadline
        try:
            conn.request(method, self.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            return response.status, _read_answer(response, url)
        except (TimeoutError, socket.timeout):
            raise HeadUnreachable(url, f"no answer within {self.timeout_s:g} s") from None
        except socket.gaierror as e:
            raise HeadUnreachable(url, f"the host name {self.host!r} does not resolve ({e.strerror})") from None
        except ConnectionRefusedError:
            raise HeadUnreachable(url, f"connection refused: nothing listens on {self.host}:{self.port}") from None
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected, http.client.IncompleteRead):
            raise HeadUnreachable(url, "the connection closed before the head answered") from None
        except OSError as e:
            raise HeadUnreachable(url, self._scrub(f"{type(e).__name__}: {e}")) from None
        except http.client.HTTPException as e:
            raise HeadError(url, 0, self._scrub(f"not an HTTP answer ({type(e).__name__}: {str(e)[:200]})")) from None
        finally:
            conn.close()

    def _scrub(self, text: str) -> str:
        """`text` with the token replaced: no message ever carries it, whatever a server echoes."""
        return text.replace(self._token, "<token>") if self._token else text


def _start(value, limit: int = 200) -> str:
    """The start of an answer, for a message."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
    text = text.strip()
    return (text[:limit] + "...") if len(text) > limit else (text or "an empty body")


def _read_answer(response: http.client.HTTPResponse, url: str) -> bytes:
    """The body of `response`, at most MAX_ANSWER_BYTES; one raw read per call (read1), so the
    socket's deadline bounds the whole body."""
    chunks, size = [], 0
    while True:
        chunk = response.read1(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise HeadError(url, response.status, f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)


# --- sockets bounded by one deadline ----------------------------------------------------------------
class _DeadlineSocket(socket.socket):
    """A TCP socket whose every wait ends at `deadline` (a plain timeout restarts with each byte)."""
    deadline = math.inf

    def _left(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def recv_into(self, *args, **kwargs):
        self._left()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self._left()
        return super().recv(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self._left()
        return super().sendall(*args, **kwargs)


def _resolve(host: str, port: int, deadline: float) -> list:
    """getaddrinfo for TCP, given up at `deadline` (run in a daemon thread: the C resolver cannot
    be interrupted, so a hung one keeps only that thread, never the caller)."""
    try:
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except ValueError:
        pass
    result: dict = {}

    def resolve() -> None:
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=resolve, name=f"tasuki-operator-resolve-{host}", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" in result:
        raise result["error"]
    if "infos" not in result:
        raise TimeoutError(f"resolving {host!r} did not finish in time")
    return result["infos"]


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A connected _DeadlineSocket to the first address of `host` that accepts."""
    error: OSError = OSError(f"{host!r} resolves to no address")
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        sock = _DeadlineSocket(family, kind, proto)
        sock.deadline = deadline
        try:
            sock._left()
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


class _HTTPConnection(http.client.HTTPConnection):
    """http.client's connection, connected by `_connect` (one deadline for DNS, connect and reads)."""
    deadline = math.inf

    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, self.deadline)


class _HTTPSConnection(http.client.HTTPSConnection, _HTTPConnection):
    """https: HTTPSConnection.connect wraps what _HTTPConnection.connect opened (MRO), so DNS and
    connect share the deadline; TLS reads are bounded per operation by http.client's timeout."""
