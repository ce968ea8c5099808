"""The operator's HTTP client for the head (tasuki_operator/head_api.py).

Most tests drive tests/fake_head.py (a fake head on 127.0.0.1); a few use a raw socket server to
misbehave in ways an HTTP server will not (trickle bytes, answer garbage, echo the token); the last
reads demand from and drains a node of a real cluster started with `tasuki start`.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_port, wait_until
from fake_head import FakeHead

from tasuki_operator import head_api
from tasuki_operator.head_api import DrainAnswer, HeadAPI, HeadAPIError, HeadError, HeadUnreachable, head_url

TOKEN = "s3cret-cluster-token"
FAST = 1.0               # seconds: the timeout of a client that must give up fast


@pytest.fixture
def head():
    with FakeHead(token=TOKEN) as fake:
        fake.add_node("head0", node_name="demo-head", is_head_node=True, resources={"CPU": 2.0})
        fake.add_node("n1", node_name="demo-worker-cpu-abcde", group="cpu", resources={"CPU": 4.0},
                      seconds_idle=120.0)
        fake.add_node("n2", node_name="demo-worker-cpu-fghij", group="cpu", resources={"CPU": 4.0},
                      busy_workers=2)
        fake.set_demand([{"shape": {"CPU": 1.0}, "count": 3}, {"shape": {"CPU": 64.0}, "count": 1, "feasible": False}],
                        waiting=5)
        yield fake


@pytest.fixture
def api(head):
    return HeadAPI(head.url, TOKEN, timeout_s=FAST)


# --- URL templates --------------------------------------------------------------------------------
WHERE = {"name": "demo", "namespace": "ml", "service": "demo-head", "port": 8265}


@pytest.mark.parametrize("template, expected", [
    (head_api.DEFAULT_HEAD_URL, "http://demo-head.ml.svc:8265"),
    ("http://{service}.{namespace}.svc.cluster.local:{port}", "http://demo-head.ml.svc.cluster.local:8265"),
    ("http://127.0.0.1:{port}/", "http://127.0.0.1:8265"),
    ("http://localhost:8001/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy",
     "http://localhost:8001/api/v1/namespaces/ml/services/demo-head:8265/proxy"),
    ("https://heads.example.com/{namespace}/{name}/", "https://heads.example.com/ml/demo"),
    ("http://[::1]:{port}", "http://[::1]:8265"),
    ("http://h:1/{{literal}}/{name}", "http://h:1/{literal}/demo"),
])
def test_head_url_expands_the_template(template, expected):
    assert head_url(template, **WHERE) == expected


@pytest.mark.parametrize("template, words", [
    ("http://{svc}.{namespace}:{port}", ["{svc}", "{service}"]),          # names the unknown one and the known
    ("http://{service}:{port}/{cluster}", ["{cluster}"]),
    ("http://{0}:{port}", ["{0}"]),
    ("http://{}:{port}", ["{}"]),
    ("http://{service}:{port:05d}", ["format spec", "{port}"]),
    ("http://{service!r}:{port}", ["{service}"]),
    ("http://{service:{port}", ["brace"]),
    ("{service}.{namespace}.svc:{port}", ["http://HOST:PORT"]),          # no scheme
    ("ftp://{service}:{port}", ["http://HOST:PORT"]),
    ("http://{service}:{port}?x=1", ["query"]),
    ("http://{service}:99999999", ["port"]),
])
def test_head_url_rejects_a_bad_template(template, words):
    with pytest.raises(ValueError) as e:
        head_url(template, **WHERE)
    for word in words:
        assert word in str(e.value), str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"base_url": "demo-head:8265"}, ["http://HOST:PORT"]),
    ({"timeout_s": 0}, ["timeout_s"]),
    ({"timeout_s": float("inf")}, ["timeout_s"]),
    ({"token": "abc\r\nX-Evil: 1"}, ["token", "not shown"]),
])
def test_client_checks_its_arguments_without_showing_the_token(kwargs, words):
    args = {"base_url": "http://h:1", "token": TOKEN, "timeout_s": 1.0, **kwargs}
    with pytest.raises(ValueError) as e:
        HeadAPI(**args)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "abc" not in str(e.value)


def test_repr_hides_the_token():
    assert TOKEN not in repr(HeadAPI("http://h:1", TOKEN)) and "<set>" in repr(HeadAPI("http://h:1", TOKEN))


# --- reading ----------------------------------------------------------------------------------------
def test_demand_is_parsed(api):
    demand = api.demand()
    assert demand["pending"] == [{"shape": {"CPU": 1.0}, "count": 3, "feasible": True},
                                 {"shape": {"CPU": 64.0}, "count": 1, "feasible": False}]
    assert demand["waiting_for_dependencies"] == 5
    by_id = {n["node_id"]: n for n in demand["nodes"]}
    assert (by_id["n1"]["node_name"], by_id["n1"]["group"], by_id["n1"]["seconds_idle"]) == \
        ("demo-worker-cpu-abcde", "cpu", 120.0)
    assert by_id["n2"]["busy_workers"] == 2 and by_id["head0"]["is_head_node"] is True


def test_nodes_are_parsed(api, head):
    head.set_state("n2", "dead")
    nodes = api.nodes()
    assert [(n["node_id"], n["state"]) for n in nodes] == [("head0", "alive"), ("n1", "alive"), ("n2", "dead")]
    assert head.requests[-1] == ("GET", "/api/v1/nodes")


def test_reads_send_no_token():
    seen = []
    with raw_server(lambda conn: seen.append(read_request(conn)) or
                    conn.sendall(http_answer(200, b'{"pending": [], "nodes": []}'))) as url:
        HeadAPI(url, TOKEN, timeout_s=FAST).demand()
    assert b"authorization" not in seen[0].lower() and seen[0].startswith(b"GET /api/v1/demand HTTP/1.1")


def test_a_path_prefix_is_kept():
    with FakeHead(token=TOKEN, prefix="/proxy/demo") as fake:
        fake.set_demand([{"shape": {"GPU": 1.0}, "count": 2}])
        api = HeadAPI(fake.url + "/", TOKEN, timeout_s=FAST)
        assert api.demand()["pending"][0]["count"] == 2
        fake.add_node("n1")
        assert api.drain("n1").drained
        assert [p for _, p in fake.requests] == ["/proxy/demo/api/v1/demand", "/proxy/demo/api/v1/nodes/n1/drain"]


# --- draining ---------------------------------------------------------------------------------------
def test_drain_idle_node_is_drained(api, head):
    answer = api.drain("n1")
    assert answer == DrainAnswer(node_id="n1", drained=True, refused=False, running_tasks=0, state="draining",
                                 objects=0)
    assert head.drains == [{"node_id": "n1", "if_idle": True}]
    assert head.node("n1")["state"] == "draining"


def test_drain_busy_node_is_refused_and_left_alone(api, head):
    answer = api.drain("n2")
    assert (answer.refused, answer.drained, answer.running_tasks, answer.state, answer.objects) == \
        (True, False, 2, "alive", None)
    assert "runs 2 task(s)" in answer.message
    assert head.node("n2")["state"] == "alive"


def test_drain_busy_node_without_if_idle_drains_it(api, head):
    answer = api.drain("n2", if_idle=False)
    assert (answer.refused, answer.drained, answer.state, answer.running_tasks) == (False, False, "draining", 2)
    head.set_busy("n2", 0)
    assert api.drain("n2", if_idle=True).drained          # asked again once idle: the head says it is empty
    assert head.drains == [{"node_id": "n2", "if_idle": False}, {"node_id": "n2", "if_idle": True}]


def test_drain_unknown_node_is_a_404(api):
    with pytest.raises(HeadError) as e:
        api.drain("nope")
    assert e.value.status == 404 and "nope" in e.value.message


@pytest.mark.parametrize("token", ["wrong-token", "", None])
def test_wrong_token_is_a_401_that_never_shows_the_token(head, token):
    api = HeadAPI(head.url, token, timeout_s=FAST)
    with pytest.raises(HeadError) as e:
        api.drain("n1")
    assert e.value.status == 401 and "Authorization: Bearer" in e.value.message
    assert head.drains == [] and head.node("n1")["state"] == "alive"
    for text in (str(e.value), repr(e.value), e.value.message):
        assert TOKEN not in text and (not token or token not in text)


def test_a_token_echoed_by_a_server_is_scrubbed():
    body = json.dumps({"error": f"bad token {TOKEN}"}).encode()
    with raw_server(lambda conn: read_request(conn) and conn.sendall(http_answer(403, body))) as url:
        with pytest.raises(HeadError) as e:
            HeadAPI(url, TOKEN, timeout_s=FAST).drain("n1")
    assert e.value.status == 403 and TOKEN not in str(e.value) and "<token>" in str(e.value)


# --- failures ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503])
def test_an_error_status_is_a_head_error(api, head, status):
    head.fail(status)
    for call in (api.demand, api.nodes, lambda: api.drain("n1")):
        with pytest.raises(HeadError) as e:
            call()
        assert e.value.status == status and "told to fail" in e.value.message
        assert f"HTTP {status}" in str(e.value) and head.url in str(e.value)
    head.fail(None)
    assert api.demand()["waiting_for_dependencies"] == 5


def test_a_closed_connection_is_unreachable(api, head):
    head.fail("close")
    with pytest.raises(HeadUnreachable) as e:
        api.demand()
    assert "closed" in e.value.cause and "head pod" in str(e.value) and "--head-url" in str(e.value)


def test_unreachable_port_fails_fast():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(HeadUnreachable) as e:
        HeadAPI(url, TOKEN, timeout_s=5.0).demand()
    assert time.monotonic() - started < 2.0
    assert "connection refused" in e.value.cause and url in str(e.value) and isinstance(e.value, HeadAPIError)


def test_slow_head_times_out_within_the_timeout(api, head):
    head.delay = 10.0
    started = time.monotonic()
    with pytest.raises(HeadUnreachable) as e:
        api.demand()
    took = time.monotonic() - started
    assert FAST * 0.9 <= took < FAST + 1.5, took
    assert f"no answer within {FAST:g} s" in str(e.value)


def test_a_trickling_head_is_cut_off_at_the_deadline():
    """One byte every 0.1 s: a per-read timeout would wait forever; the deadline does not."""
    def trickle(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):
            conn.sendall(b" ")
            time.sleep(0.1)

    with raw_server(trickle) as url:
        started = time.monotonic()
        with pytest.raises(HeadUnreachable):
            HeadAPI(url, TOKEN, timeout_s=0.5).demand()
        assert time.monotonic() - started < 2.0


def test_a_hung_resolver_is_given_up(monkeypatch):
    real = socket.getaddrinfo

    def hung(host, *args, **kwargs):
        if host == "hung.example":
            time.sleep(3)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hung)
    started = time.monotonic()
    with pytest.raises(HeadUnreachable) as e:
        HeadAPI("http://hung.example:8265", TOKEN, timeout_s=0.3).demand()
    assert time.monotonic() - started < 1.5 and "no answer within 0.3 s" in str(e.value)


def test_a_name_that_does_not_resolve_is_unreachable():
    with pytest.raises(HeadUnreachable) as e:
        HeadAPI("http://no-such-head.invalid:8265", TOKEN, timeout_s=3.0).demand()
    assert "no-such-head.invalid" in str(e.value)


@pytest.mark.parametrize("status, body, words", [
    (200, b"<html>not json</html>", ["not JSON", "<html>"]),
    (200, b'{"pending": 3}', ["'pending' and 'nodes'"]),
    (502, b"Bad Gateway", ["HTTP 502", "Bad Gateway"]),
    (500, b"", ["HTTP 500", "empty body"]),
])
def test_an_answer_that_is_not_the_heads_json_is_a_head_error(status, body, words):
    with raw_server(lambda conn: read_request(conn) and conn.sendall(http_answer(status, body))) as url:
        with pytest.raises(HeadError) as e:
            HeadAPI(url, TOKEN, timeout_s=FAST).demand()
    assert all(w in str(e.value) for w in words), str(e.value)


def test_garbage_instead_of_http_is_a_head_error():
    with raw_server(lambda conn: read_request(conn) and conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")) as url:
        with pytest.raises(HeadError) as e:
            HeadAPI(url, TOKEN, timeout_s=FAST).demand()
    assert e.value.status == 0 and "not an HTTP answer" in str(e.value)


def test_the_module_imports_no_kubernetes_kopf_or_zmq():
    code = "import sys, tasuki_operator.head_api; print(sorted({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert not {"zmq", "kubernetes", "kopf"} & set(eval(out.stdout))


# --- a real head --------------------------------------------------------------------------------------
def test_real_head_demand_and_drain(cli_cluster):
    extra, _ = cli_cluster.add_node("127.0.0.2", "--num-cpus", "1",
                                    env={"TASUKI_NODE_NAME": "demo-worker-cpu-x7k2q", "TASUKI_NODE_GROUP": "cpu"})
    info = cli_cluster.info
    api = HeadAPI(info["metrics"], info["token"], timeout_s=10.0)
    demand = wait_until(lambda: (d := api.demand()) and any(n["node_id"] == extra for n in d["nodes"]) and d,
                        30, "the extra node in the head's demand")
    assert demand["pending"] == []
    node = next(n for n in demand["nodes"] if n["node_id"] == extra)
    assert (node["node_name"], node["group"], node["state"], node["busy_workers"]) == \
        ("demo-worker-cpu-x7k2q", "cpu", "alive", 0)

    with pytest.raises(HeadError) as e:
        HeadAPI(info["metrics"], "wrong", timeout_s=10.0).drain(extra)
    assert e.value.status == 401 and info["token"] not in str(e.value)
    with pytest.raises(HeadError) as e:
        api.drain("no-such-node")
    assert e.value.status == 404

    answer = api.drain(extra, if_idle=True)
    assert (answer.node_id, answer.drained, answer.refused, answer.state, answer.running_tasks) == \
        (extra, True, False, "draining", 0)
    assert next(n["state"] for n in api.nodes() if n["node_id"] == extra) == "draining"


# --- helpers ------------------------------------------------------------------------------------------
class raw_server:
    """A one-thread TCP server on 127.0.0.1 that runs `script(conn)` for each connection; `with`
    gives its base URL."""

    def __init__(self, script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    self.script(conn)
                except OSError:
                    pass

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    """Read one request (headers and a Content-Length body); returns it (truthy)."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(4096)
    return data


def http_answer(status: int, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


# --- the jobs API (job_controller's calls) ---------------------------------------------------------
def test_jobs_upload_submit_status_stop(api, head):
    import hashlib
    data = b"PK\x05\x06" + b"\0" * 18                           # an empty zip
    sha = hashlib.sha256(data).hexdigest()
    api.upload_package(sha, data)
    api.upload_package(sha, data)                                # 200: the head has it already
    assert head.jobs_api.packages == {sha: data}
    request = {"entrypoint": "python x.py", "job_id": "j-1", "working_dir": sha, "env": {"A": "1"}, "pip": [],
               "metadata": {"k8s_job": "ml/j"}}
    assert api.submit_job(request) is True
    assert api.submit_job(request) is False                      # 409: submitted before, not twice
    assert list(head.jobs_api.jobs) == ["j-1"] and head.jobs_api.jobs["j-1"]["env"] == {"A": "1"}
    assert api.job("j-1")["status"] == "RUNNING"
    api.stop_job("j-1")
    assert api.job("j-1")["status"] == "STOPPED"
    api.stop_job("j-1")                                          # 409: it already ended, left as it is
    with pytest.raises(HeadError) as err:
        api.job("nope")
    assert err.value.status == 404


def test_jobs_requests_carry_the_token_and_a_wrong_one_is_refused(head):
    with pytest.raises(HeadError) as err:
        HeadAPI(head.url, "wrong", timeout_s=FAST).job("j-1")
    assert err.value.status == 401 and "wrong" not in str(err.value)
    with pytest.raises(HeadError) as err:
        HeadAPI(head.url, "wrong", timeout_s=FAST).upload_package("0" * 64, b"x")
    assert err.value.status == 401


def test_the_jobs_calls_against_a_real_head(tmp_path):
    """The operator's client and the head's real jobs API (metrics.py, job_manager.py) agree: a ConfigMap's
    package, a submission (twice: 409 taken as done), the status, a stop (twice: 409 left alone), a 404."""
    from conftest import CliCluster
    from tasuki_operator.job_controller import package_of
    ip = "127.43.1.1"
    cluster = CliCluster(tmp_path)
    try:
        cluster.cli("start", "--head", "--port", str(free_port(ip)), "--node-ip-address", ip, "--metrics-port", "0",
                    "--object-store-memory", "128M", "--num-cpus", "1")
        api = HeadAPI(cluster.info["metrics"], cluster.info["token"], timeout_s=10)
        data, sha = package_of({"data": {"job.py": "import os\nprint(os.environ['GREETING'])\n"}})
        api.upload_package(sha, data)
        request = {"entrypoint": "python job.py", "job_id": "op-1", "working_dir": sha, "env": {"GREETING": "hi"},
                   "pip": [], "metadata": {"k8s_job": "ml/op"}}
        assert api.submit_job(request) is True
        assert api.submit_job(request) is False
        done = wait_until(lambda: (j := api.job("op-1"))["status"] in ("SUCCEEDED", "FAILED") and j, 60, "op-1 ends")
        assert (done["status"], done["exit_code"]) == ("SUCCEEDED", 0), done
        assert api.submit_job({**request, "entrypoint": "sleep 60", "job_id": "op-2"})
        wait_until(lambda: api.job("op-2")["status"] == "RUNNING", 60, "op-2 runs")
        api.stop_job("op-2")
        wait_until(lambda: api.job("op-2")["status"] == "STOPPED", 30, "op-2 stopped")
        api.stop_job("op-2")
        with pytest.raises(HeadError) as err:
            api.job("no-such-job")
        assert err.value.status == 404
    finally:
        cluster.stop()
