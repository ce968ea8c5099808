"""The head's job submission (job_manager.py, the /api/v1/jobs routes in metrics.py, head.end_submission):
pure decisions table-driven, a JobManager in this process running real commands, and real jobs
against a `tasuki start --head` cluster over plain HTTP (urllib, http.client)."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
import zipfile

import pytest

from conftest import CliCluster, free_port, wait_until
from tasuki import job_manager as J
from tasuki.job_manager import JobRefused, JobLog, JobManager

IP = "127.41.0.1"
PACKAGE_MAX = 4096


# --- pure decisions -----------------------------------------------------------------------
@pytest.mark.parametrize("body, known, code, words", [
    ("python x.py", (), 400, "JSON object"),
    ({}, (), 400, "'entrypoint' must be a non-empty"),
    ({"entrypoint": "  "}, (), 400, "'entrypoint' must be a non-empty"),
    ({"entrypoint": "x", "colour": 1}, (), 400, "unknown field(s) 'colour'"),
    ({"entrypoint": "x", "job_id": "../etc"}, (), 400, "'job_id' must be"),
    ({"entrypoint": "x", "job_id": "a" * 65}, (), 400, "'job_id' must be"),
    ({"entrypoint": "x", "job_id": "mine"}, ("mine",), 409, "exists already"),
    ({"entrypoint": "x", "job_id": "packages"}, (), 400, "may not be 'packages'"),
    ({"entrypoint": "x", "working_dir": "abc"}, (), 400, "'working_dir' must be the sha256"),
    ({"entrypoint": "x", "env": {"A": 1}}, (), 400, "'env' must be an object of strings"),
    ({"entrypoint": "x", "env": {"A-B": "1"}}, (), 400, "not an environment variable name"),
    ({"entrypoint": "x", "env": {"TASUKI_ADDRESS": "elsewhere:1"}}, (), 400, "may not set TASUKI_ADDRESS"),
    ({"entrypoint": "x", "pip": "requests"}, (), 400, "'pip' must be a list"),
    ({"entrypoint": "x", "pip": ["--index-url=http://evil"]}, (), 400, "not pip options"),
    ({"entrypoint": "x", "metadata": {"a": None}}, (), 400, "'metadata' must be"),
])
def test_bad_submissions_are_refused_with_the_field_and_value(body, known, code, words):
    with pytest.raises(JobRefused) as e:
        J.validate_submission(body, known)
    assert e.value.code == code and words in str(e.value)


def test_a_good_submission_is_filled_in():
    assert J.validate_submission({"entrypoint": "python s.py 1", "env": {"A": "1"}, "pip": [" six "]}) == {
        "entrypoint": "python s.py 1", "job_id": None, "working_dir": None, "env": {"A": "1"}, "pip": ["six"],
        "metadata": {}}


@pytest.mark.parametrize("status, event, after", [
    ("PENDING", "started", "RUNNING"), ("PENDING", "pip_failed", "FAILED"), ("PENDING", "start_failed", "FAILED"),
    ("PENDING", "stopped", "STOPPED"), ("RUNNING", "stopped", "STOPPED"), ("RUNNING", "succeeded", "SUCCEEDED"),
    ("RUNNING", "failed", "FAILED"), ("SUCCEEDED", "stopped", "SUCCEEDED"), ("STOPPED", "failed", "STOPPED"),
    ("FAILED", "started", "FAILED"), ("PENDING", "succeeded", "PENDING"),
])
def test_state_transitions(status, event, after):
    assert J.next_status(status, event) == after


@pytest.mark.parametrize("code, stopping, event", [(0, "", "succeeded"), (3, "", "failed"),
                                                   (-15, "stopped on request", "stopped"), (0, "why", "stopped")])
def test_exit_events(code, stopping, event):
    assert J.exit_event(code, stopping) == event


@pytest.mark.parametrize("code, entrypoint, tail, words", [
    (0, "python s.py", "", "exited with 0"),
    (127, "nosuch --flag", "sh: 1: nosuch: not found\n", "exited with 127: command not found: nosuch"),
    (126, "./s.sh", "sh: 1: ./s.sh: Permission denied", "./s.sh is not executable"),
    (2, "python gone.py", "python: can't open file '/w/gone.py': [Errno 2] No such file or directory\n",
     "the script was not found"),
    (3, "python s.py", "Traceback...\nValueError: bad\n\n", "exited with 3; its last output line: ValueError: bad"),
    (-9, "python s.py", "", "killed by SIGKILL(-9)"),
])
def test_exit_messages(code, entrypoint, tail, words):
    assert words in J.exit_message(code, entrypoint, tail)


def test_secrets_in_env_are_masked():
    assert J.mask_env({"AWS_SECRET_ACCESS_KEY": "s", "api_token": "t", "DB_PASSWORD": "p", "MODE": "fast"}) == {
        "AWS_SECRET_ACCESS_KEY": "***", "api_token": "***", "DB_PASSWORD": "***", "MODE": "fast"}


@pytest.mark.parametrize("offset, start, end, window", [
    (0, 0, 10, (0, 10)), (4, 0, 10, (4, 6)), (0, 100, 150, (100, 50)), (120, 100, 150, (120, 30)),
    (150, 100, 150, (150, 0)), (999, 100, 150, (150, 0)),
])
def test_log_window(offset, start, end, window):
    assert J.log_window(offset, start, end) == window


@pytest.mark.parametrize("entries, problem", [
    ([("a.py", 10), ("d/b.py", 20)], None),
    ([("a.py", 10), ("big.bin", 1000)], "unpacks to 1010 bytes, over 1000"),
    ([("../evil.py", 1)], "outside its directory"),
    ([("/etc/passwd", 1)], "outside its directory"),
])
def test_package_problems(entries, problem):
    found = J.package_problems(entries, 1000)
    assert (found is None) if problem is None else (problem in found)


def test_the_log_rotates_and_offsets_stay_absolute(tmp_path):
    log = JobLog(str(tmp_path), max_bytes=100)
    data = bytes(range(256)) * 2
    for i in range(0, len(data), 7):
        log.append(data[i:i + 7])
    assert log.end == len(data) and log.end - log.start <= 100
    first, kept = log.read(0, limit=1000)
    assert first == log.start and kept == data[log.start:]
    assert log.read(log.end - 10)[1] == data[-10:]
    assert log.read(log.start + 3, limit=5) == (log.start + 3, data[log.start + 3:log.start + 8])


# --- a JobManager in this process, no cluster -----------------------------------------------
def wait_ended(manager: JobManager, job_id: str, timeout: float = 30.0) -> dict:
    return wait_until(lambda: (j := manager.get(job_id))["status"] in J.ENDED and j, timeout,
                      f"job {job_id} to end")


def test_status_and_logs_outlive_the_driver_and_the_manager(tmp_path, monkeypatch):
    monkeypatch.setenv("TASUKI_JOB_LOG_MAX_BYTES", "1000")
    ended = []
    manager = JobManager(str(tmp_path), "tcp://127.41.0.9:1", "secret", on_end=ended.append)
    job_id = manager.submit({"entrypoint": "echo start; python -c \"print('x' * 3000)\"; echo $TASUKI_JOB_ID done",
                             "env": {"MY_TOKEN": "hidden"}})
    job = wait_ended(manager, job_id)
    assert job["status"] == "SUCCEEDED" and job["exit_code"] == 0 and job["env"] == {"MY_TOKEN": "***"}
    assert ended == [job_id]
    first, data = manager.read_logs(job_id)
    assert first > 0 and len(data) <= 1000 and data.endswith(f"{job_id} done\n".encode())
    again = JobManager(str(tmp_path), "tcp://127.41.0.9:1", "secret")      # a head restarted in place
    assert again.get(job_id)["status"] == "SUCCEEDED"
    assert again.read_logs(job_id, first) == (first, data)
    with pytest.raises(JobRefused) as e:
        again.stop(job_id)
    assert e.value.code == 409


def test_a_stopped_job_loses_its_whole_process_group(tmp_path):
    manager = JobManager(str(tmp_path), "tcp://127.41.0.9:1", "secret")
    job_id = manager.submit({"entrypoint": "sleep 300 & echo child $!; trap '' TERM; sleep 300"})
    wait_until(lambda: b"child" in manager.read_logs(job_id)[1], 20, "the job's output")
    child = int(manager.read_logs(job_id)[1].split()[1])
    started = time.monotonic()
    job = manager.stop(job_id, grace_s=0.5)          # the shell ignores SIGTERM: SIGKILL after the grace
    assert job["status"] == "STOPPED" and time.monotonic() - started < 10
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or
               open(f"/proc/{child}/stat").read().split()[2] == "Z", 10, "the job's child to die")


# --- against a cluster started by the CLI -------------------------------------------------
def make_wheel(directory) -> str:
    """A one-module wheel, tasukijobdemo 1.0, built by hand (no network, no build backend)."""
    path = os.path.join(directory, "tasukijobdemo-1.0-py3-none-any.whl")
    info = "tasukijobdemo-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tasukijobdemo.py", "VALUE = 'installed by pip 42'\n")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tasukijobdemo\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", f"tasukijobdemo.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    return path


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A cluster from `tasuki start --head --num-cpus 4` with small job limits; (cluster, base URL, token)."""
    cluster = CliCluster(tmp_path_factory.mktemp("tasuki-jobs"))
    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels)
    env = {"TASUKI_JOB_PACKAGE_MAX_BYTES": str(PACKAGE_MAX),
           "TASUKI_JOB_PIP_ARGS": f"--no-index --find-links {wheels}"}
    try:
        cluster.cli("start", "--head", "--port", str(free_port(IP)), "--node-ip-address", IP, "--metrics-port", "0",
                    "--object-store-memory", "128M", "--num-cpus", "4", env=env)
        yield cluster, cluster.info["metrics"], cluster.info["token"]
    finally:
        cluster.stop()


def call(base: str, token: str, method: str, path: str, body=None, headers=None, timeout: float = 30):
    """(status, decoded JSON or bytes, headers) of one request."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, code, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as e:
        raw, code, got = e.read(), e.code, e.headers
    is_json = got.get("Content-Type", "").startswith("application/json")
    return code, json.loads(raw) if is_json else raw, got


def upload(base: str, token: str, files: dict) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    code, answer, _ = call(base, token, "PUT", f"/api/v1/jobs/packages/{sha}", data,
                           {"Content-Type": "application/zip"})
    assert code in (200, 201) and answer == {"package": sha, "bytes": len(data)}, answer
    return sha


def submit(base: str, token: str, **body) -> str:
    code, answer, _ = call(base, token, "POST", "/api/v1/jobs", body)
    assert code == 201, answer
    return answer["job_id"]


def wait_job(base: str, token: str, job_id: str, timeout: float = 60) -> dict:
    def ended():
        job = call(base, token, "GET", f"/api/v1/jobs/{job_id}")[1]
        return job if job["status"] in J.ENDED else None
    return wait_until(ended, timeout, f"job {job_id} to end")


def logs(base: str, token: str, job_id: str) -> str:
    return call(base, token, "GET", f"/api/v1/jobs/{job_id}/logs")[1].decode()


SQUARES = """
import tasuki
tasuki.init()

@tasuki.remote
def square(x):
    return x * x

print("squares", tasuki.get([square.remote(i) for i in range(5)]), flush=True)
"""


def test_a_script_runs_tasks_on_the_cluster_and_its_output_is_kept(head):
    cluster, base, token = head
    sha = upload(base, token, {"squares.py": SQUARES})
    job_id = submit(base, token, entrypoint="python squares.py", working_dir=sha, metadata={"who": "test"})
    assert job_id.startswith("job-")
    job = wait_job(base, token, job_id)
    output = logs(base, token, job_id)
    assert job["status"] == "SUCCEEDED" and job["exit_code"] == 0, (job, output)
    assert "squares [0, 1, 4, 9, 16]" in output
    assert job["start_time"] >= job["submitted_at"] and job["end_time"] >= job["start_time"]
    assert job["metadata"] == {"who": "test"} and job["working_dir"] == sha
    assert call(base, token, "GET", "/api/v1/jobs")[1][0] == job      # newest first


SELF_AWARE = """
import os
from tasuki.jobs import JobClient
client = JobClient()            # inside a job: no address, no token
me = client.status(os.environ["TASUKI_JOB_ID"])
print("I am", me["job_id"], me["status"], "at", client.url, flush=True)
"""


def test_a_job_reaches_the_jobs_api_with_jobclient_defaults(head):
    """Inside a job TASUKI_ADDRESS is the head's runtime port; JobClient() still finds the HTTP port."""
    cluster, base, token = head
    package = upload(base, token, {"self_aware.py": SELF_AWARE})
    job_id = submit(base, token, entrypoint="python self_aware.py", working_dir=package)
    job = wait_job(base, token, job_id)
    output = logs(base, token, job_id)
    assert job["status"] == "SUCCEEDED", (job, output)
    assert f"I am {job_id} RUNNING at {base}" in output


@pytest.mark.parametrize("entrypoint, code, words", [
    ("python -c 'import sys; print(\"bad input\"); sys.exit(3)'", 3, "exited with 3; its last output line: bad input"),
    ("nosuchcommand-tasuki --x", 127, "command not found: nosuchcommand-tasuki"),
    ("python missing_script.py", 2, "the script was not found"),
])
def test_failing_entrypoints_say_why(head, entrypoint, code, words):
    _, base, token = head
    job = wait_job(base, token, submit(base, token, entrypoint=entrypoint))
    assert job["status"] == "FAILED" and job["exit_code"] == code and words in job["message"], job


def test_pip_requirements_install_into_the_jobs_environment(head):
    _, base, token = head
    job_id = submit(base, token, entrypoint="python -c 'import tasukijobdemo, tasuki; print(tasukijobdemo.VALUE)'",
                    pip=["tasukijobdemo"])
    job = wait_job(base, token, job_id, 120)
    assert job["status"] == "SUCCEEDED", (job, logs(base, token, job_id))
    assert "installed by pip 42" in logs(base, token, job_id)


def test_a_pip_failure_fails_the_job_with_pips_output(head):
    _, base, token = head
    job_id = submit(base, token, entrypoint="echo never ran", pip=["no-such-package-tasuki==9"])
    job = wait_job(base, token, job_id, 120)
    output = logs(base, token, job_id)
    assert job["status"] == "FAILED" and "pip could not install no-such-package-tasuki==9" in job["message"]
    assert "No matching distribution" in output and "never ran" not in output and job["driver_pid"] is None


def test_the_token_is_needed_and_nothing_runs_without_it(head):
    _, base, token = head
    before = call(base, token, "GET", "/api/v1/jobs")[1]
    for method, path, body in (("POST", "/api/v1/jobs", {"entrypoint": "touch /tmp/should-not"}),
                               ("GET", "/api/v1/jobs", None),
                               ("PUT", "/api/v1/jobs/packages/" + "0" * 64, b"zip"),
                               ("POST", f"/api/v1/jobs/{before[0]['job_id'] if before else 'x'}/stop", b"")):
        code, answer, _ = call(base, "wrong", method, path, body)
        assert code == 401 and "Bearer" in answer["error"], (method, path, answer)
    assert call(base, token, "GET", "/api/v1/jobs")[1] == before


def test_a_package_over_the_limit_gets_413_naming_it(head):
    _, base, token = head
    connection = http.client.HTTPConnection(base.split("//")[1], timeout=30)
    connection.request("PUT", "/api/v1/jobs/packages/" + "a" * 64, body=b"z" * (PACKAGE_MAX + 50_000),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/zip"})
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 413 and f"{PACKAGE_MAX + 50_000} bytes" in error
    assert f"limit of {PACKAGE_MAX} bytes (TASUKI_JOB_PACKAGE_MAX_BYTES" in error
    code, answer, _ = call(base, token, "PUT", "/api/v1/jobs/packages/" + "b" * 64, b"not this")
    assert code == 400 and "sha256 is" in answer["error"]
    # a client waiting for '100 Continue' (curl -T) is refused before it sends anything
    host, port = base.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(f"PUT /api/v1/jobs/packages/{'d' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {10 ** 9}\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer, answer


def test_duplicate_and_unknown_job_ids(head):
    _, base, token = head
    submit(base, token, entrypoint="true", job_id="twice")
    code, answer, _ = call(base, token, "POST", "/api/v1/jobs", {"entrypoint": "true", "job_id": "twice"})
    assert code == 409 and "exists already" in answer["error"]
    assert call(base, token, "GET", "/api/v1/jobs/nope")[0] == 404
    code, answer, _ = call(base, token, "POST", "/api/v1/jobs", {"entrypoint": "true", "working_dir": "c" * 64})
    assert code == 400 and "PUT it to" in answer["error"]
    wait_job(base, token, "twice")
    code, answer, _ = call(base, token, "POST", "/api/v1/jobs/twice/stop", b"")
    assert code == 409 and "already ended" in answer["error"]


FOLLOW = """
import os, sys, time
print("first line", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("second line", flush=True)
"""


def test_follow_streams_lines_as_they_come(head, tmp_path):
    _, base, token = head
    gate = tmp_path / "gate"
    sha = upload(base, token, {"follow.py": FOLLOW})
    job_id = submit(base, token, entrypoint=f"python follow.py {gate}", working_dir=sha)
    connection = http.client.HTTPConnection(base.split("//")[1], timeout=30)
    connection.request("GET", f"/api/v1/jobs/{job_id}/logs?follow=1&offset=0",
                       headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    assert response.status == 200 and response.headers["X-Tasuki-Log-Offset"] == "0"
    assert response.readline() == b"first line\n"          # while the job still runs, waiting for the gate
    assert call(base, token, "GET", f"/api/v1/jobs/{job_id}")[1]["status"] == "RUNNING"
    gate.write_text("go")
    assert response.readline() == b"second line\n"
    assert response.read() == b""                          # the stream ends with the job
    assert wait_job(base, token, job_id)["status"] == "SUCCEEDED"
    code, tail, headers = call(base, token, "GET", f"/api/v1/jobs/{job_id}/logs?offset=6")
    assert tail == b"line\nsecond line\n" and headers["X-Tasuki-Log-Offset"] == "6"


LONG = """
import time, tasuki
tasuki.init()

@tasuki.remote
def forever():
    time.sleep(600)

@tasuki.remote
class Counter:
    def ping(self):
        return "pong"

counter = Counter.remote()
keeper = Counter.options(name="keeper", lifetime="detached").remote()
ref = forever.remote()
print("ready", tasuki.get([counter.ping.remote(), keeper.ping.remote()]), flush=True)
time.sleep(600)
"""


def test_stop_ends_the_driver_and_its_tasks_and_actors(head):
    _, base, token = head
    sha = upload(base, token, {"long.py": LONG})
    job_id = submit(base, token, entrypoint="python long.py", working_dir=sha)
    wait_until(lambda: "ready ['pong', 'pong']" in logs(base, token, job_id), 60, "the job's task and actors to start")

    def cluster_state():
        status = call(base, token, "GET", "/api/v1/status")[1]
        counters = [a for a in status["actors"] if a["class_name"] == "Counter"]
        return (status["running"], [a["state"] for a in counters if a["name"] is None],
                [a["state"] for a in counters if a["name"] == "keeper"])
    wait_until(lambda: cluster_state()[0] >= 1, 30, "the long task to run")
    assert cluster_state()[1:] == (["ALIVE"], ["ALIVE"])
    started = time.monotonic()
    code, job, _ = call(base, token, "POST", f"/api/v1/jobs/{job_id}/stop", b"")
    assert code == 200 and job["status"] == "STOPPED" and job["message"].startswith("stopped on request: "), job
    wait_until(lambda: cluster_state()[:2] == (0, ["DEAD"]), 10, "the job's task and actor to end")
    assert cluster_state()[2] == ["ALIVE"]          # a detached actor outlives its job
    assert time.monotonic() - started < 15
    assert not os.path.exists(f"/proc/{job['driver_pid']}") or \
        open(f"/proc/{job['driver_pid']}/stat").read().split()[2] == "Z"


ABANDON = """
import os, time, tasuki
tasuki.init()

@tasuki.remote
def forever():
    time.sleep(600)

@tasuki.remote
class Holder:
    def ping(self):
        return "pong"

holder = Holder.remote()
ref = forever.remote()
print(tasuki.get(holder.ping.remote()), flush=True)
while not tasuki.nodes() or tasuki.cluster_resources().get("CPU", 0) - tasuki.available_resources().get("CPU", 0) < 1:
    time.sleep(0.05)
os._exit(0)                      # no goodbye to the head: only the job's end tells it
"""


def test_a_driver_that_exits_leaves_nothing_running(head):
    _, base, token = head
    sha = upload(base, token, {"abandon.py": ABANDON})
    job_id = submit(base, token, entrypoint="python abandon.py", working_dir=sha)
    assert wait_job(base, token, job_id)["status"] == "SUCCEEDED", logs(base, token, job_id)

    def left():
        status = call(base, token, "GET", "/api/v1/status")[1]
        return status["running"], [a["state"] for a in status["actors"] if a["class_name"] == "Holder"]
    wait_until(lambda: left() == (0, ["DEAD"]), 10, "the job's task and actor to end with its driver")


def test_a_head_restarted_in_place_lists_the_jobs_and_their_logs(tmp_path):
    cluster = CliCluster(tmp_path / "session")
    os.makedirs(cluster.tmpdir, mode=0o700)
    port = str(free_port(IP))

    def start() -> tuple[str, str]:
        cluster.cli("start", "--head", "--port", port, "--node-ip-address", IP, "--metrics-port", "0",
                    "--object-store-memory", "64M", "--num-cpus", "1")
        return cluster.info["metrics"], cluster.info["token"]
    try:
        base, token = start()
        done = submit(base, token, entrypoint="echo kept across restarts")
        wait_job(base, token, done)
        running = submit(base, token, entrypoint="echo started; sleep 300")
        wait_until(lambda: logs(base, token, running) == "started\n", 30, "the job to start")
        cluster.cli("stop")                       # the head stops its running job first
        base, token = start()
        jobs = {j["job_id"]: j for j in call(base, token, "GET", "/api/v1/jobs")[1]}
        assert jobs[done]["status"] == "SUCCEEDED" and logs(base, token, done) == "kept across restarts\n"
        assert jobs[running]["status"] == "STOPPED", jobs[running]
        assert jobs[running]["message"].startswith("stopped as the head shut down: the entrypoint was killed by")
    finally:
        cluster.stop()
