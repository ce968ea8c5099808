"""The jobs client (tasuki.jobs) and `tasuki job ...` (job_cli.py) against a fake jobs API (fake_jobs_server.py)."""
from __future__ import annotations

import io
import os
import sys
import threading
import zipfile

import pytest

from conftest import cluster_env, run_cli, wait_until
from fake_jobs_server import FakeJobsServer

from tasuki import cli, job_cli
from tasuki.exceptions import ClusterError, GetTimeoutError, JobError
from tasuki.jobs import JobClient, resolve_endpoint, zip_directory

HOST = "127.42.0.1"
TOKEN = "t0k-jobs"


@pytest.fixture
def server():
    with FakeJobsServer(HOST, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def runner():
    with FakeJobsServer(HOST, token=TOKEN, run=True) as fake:
        yield fake


@pytest.fixture(autouse=True)
def no_local_cluster(tmp_path, monkeypatch):
    """No TASUKI_* from the caller, and a session directory of the test's own (no cluster file)."""
    for name in [k for k in os.environ if k.startswith("TASUKI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TASUKI_TMPDIR", str(tmp_path / "session"))


def client(server: FakeJobsServer) -> JobClient:
    return JobClient(server.url, token=TOKEN)


# --- where the API is (pure) -----------------------------------------------------------------------
CLUSTER = {"address": "tcp://10.0.0.5:6380", "token": "file-token", "metrics": "http://10.0.0.5:8080"}


@pytest.mark.parametrize("address, token, env, cluster, expected", [
    ("http://h:8080", "t", {}, None, ("http://h:8080", "t")),
    ("h:8080", "t", {}, None, ("http://h:8080", "t")),
    ("h", "t", {}, None, ("http://h:8080", "t")),                                          # the pods' HTTP port
    ("http://[::1]:9000", "t", {}, None, ("http://[::1]:9000", "t")),
    ("https://proxy/clusters/demo/", "t", {}, None, ("https://proxy/clusters/demo", "t")),
    (None, None, {"TASUKI_ADDRESS": "http://e:9000", "TASUKI_TOKEN": "et"}, CLUSTER, ("http://e:9000", "et")),
    (None, None, {}, CLUSTER, ("http://10.0.0.5:8080", "file-token")),
    ("tasuki://10.0.0.5:6380", None, {}, CLUSTER, ("http://10.0.0.5:8080", "file-token")),
    ("10.0.0.5:6380", None, {}, CLUSTER, ("http://10.0.0.5:8080", "file-token")),          # the runtime port here
    (None, None, {"TASUKI_ADDRESS": "tcp://10.0.0.5:6380"}, CLUSTER, ("http://10.0.0.5:8080", "file-token")),
    ("http://10.0.0.5:8080", "mine", {"TASUKI_TOKEN": "env"}, CLUSTER, ("http://10.0.0.5:8080", "mine")),
])
def test_resolve_endpoint(address, token, env, cluster, expected):
    assert resolve_endpoint(address, token, env, cluster) == expected


@pytest.mark.parametrize("address, token, cluster, says", [
    (None, "t", None, "no tasuki cluster to submit to"),
    ("tasuki://other:6380", "t", CLUSTER, "http://other:8080"),             # a remote runtime port: say what to pass
    ("tasuki://10.0.0.5:6380", "t", {**CLUSTER, "metrics": None}, "no HTTP port"),
    ("ftp://h:21", "t", None, "unknown scheme"),
    ("http://h:port", "t", None, "must look like http://HOST:PORT"),
    (None, "t", {"address": "tcp://10.0.0.5:6380"}, "no HTTP port"),              # a cluster file without one
    ("http://other:8080", None, CLUSTER, "TASUKI_TOKEN"),                   # the file's token is for its own head only
])
def test_resolve_endpoint_refuses(address, token, cluster, says):
    with pytest.raises(JobError, match=says):
        resolve_endpoint(address, token, {}, cluster)


# --- the working directory -------------------------------------------------------------------------
def make_project(root) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("print('hi')\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    for skipped in ("__pycache__", ".git", ".venv", "pkg/__pycache__"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "junk").write_text("no")


def test_zip_directory_skips_caches_and_refuses_over_the_limit(tmp_path):
    make_project(tmp_path / "proj")
    out = io.BytesIO()
    size = zip_directory(str(tmp_path / "proj"), out, 1 << 20)
    assert size == len(out.getvalue())
    assert sorted(zipfile.ZipFile(out).namelist()) == ["main.py", "pkg/util.py"]
    (tmp_path / "proj" / "big.bin").write_bytes(os.urandom(20_000))
    with pytest.raises(JobError, match="TASUKI_JOB_PACKAGE_MAX_BYTES"):
        zip_directory(str(tmp_path / "proj"), io.BytesIO(), 10_000)
    with pytest.raises(JobError, match="not a directory"):
        zip_directory(str(tmp_path / "nowhere"), io.BytesIO(), 10_000)


# --- the client --------------------------------------------------------------------------------------
def test_submit_uploads_the_package_by_sha256_and_passes_every_field(server, tmp_path):
    make_project(tmp_path / "proj")
    jobs = client(server)
    job_id = jobs.submit("python main.py --n 3", working_dir=str(tmp_path / "proj"),
                         env={"MODE": "fast", "API_TOKEN": "s3cret"}, pip=["tqdm==4.66"], job_id="mine-1",
                         metadata={"owner": "ana"})
    assert job_id == "mine-1"
    record = server.jobs[job_id]
    sha = record["working_dir"]
    assert sorted(zipfile.ZipFile(io.BytesIO(server.packages[sha])).namelist()) == ["main.py", "pkg/util.py"]
    assert ("PUT", f"/api/v1/jobs/packages/{sha}") in server.requests            # the server checked the sha256
    assert (record["entrypoint"], record["env"], record["pip"], record["metadata"]) == (
        "python main.py --n 3", {"MODE": "fast", "API_TOKEN": "s3cret"}, ["tqdm==4.66"], {"owner": "ana"})
    status = jobs.status(job_id)
    assert status["status"] == "PENDING" and status["env"] == {"MODE": "fast", "API_TOKEN": "***"}

    second = jobs.submit("python main.py", working_dir=str(tmp_path / "proj"))      # same content: same package
    assert second.startswith("job-") and len(second) == 16
    assert server.jobs[second]["working_dir"] == sha and len(server.packages) == 1
    assert [j["job_id"] for j in jobs.list()] == [second, job_id]
    with pytest.raises(JobError, match="exists already") as conflict:
        jobs.submit("true", job_id="mine-1")
    assert conflict.value.status_code == 409


def test_follow_logs_yields_lines_as_they_come_and_resumes_after_a_dropped_connection(server):
    jobs = client(server)
    job_id = jobs.submit("python train.py")
    server.append_log(job_id, "epoch 1\n")
    lines, seen = [], threading.Event()
    got_first = threading.Event()

    def follow():
        for line in jobs.follow_logs(job_id):
            lines.append(line)
            got_first.set()
        seen.set()

    threading.Thread(target=follow, daemon=True).start()
    assert got_first.wait(10), "the first line did not come while the job ran"
    server.append_log(job_id, "epoch 2\nepoch 3 part")          # one chunk: the client has it all once it
    wait_until(lambda: len(lines) == 2)                          # yields "epoch 2" (and holds "epoch 3 part")
    server.break_streams()                                       # hang up mid-line, as a dropped connection does
    wait_until(lambda: ("GET", f"/api/v1/jobs/{job_id}/logs?offset=28&follow=1") in server.requests,
               what="the client to reopen the stream from byte 28")
    server.append_log(job_id, "ial\nno newline")
    server.finish(job_id, "SUCCEEDED", 0)
    assert seen.wait(10)
    assert lines == ["epoch 1\n", "epoch 2\n", "epoch 3 partial\n", "no newline"]
    assert jobs.logs(job_id) == "epoch 1\nepoch 2\nepoch 3 partial\nno newline"


def test_follow_logs_starts_from_the_oldest_kept_byte_when_logs_rotated():
    with FakeJobsServer(HOST, token=TOKEN, log_max_bytes=14) as server:
        jobs = client(server)
        job_id = jobs.submit("python x.py")
        server.append_log(job_id, "dropped line\nkept 1\nkept 2\n")
        server.finish(job_id, "SUCCEEDED", 0)
        assert list(jobs.follow_logs(job_id)) == ["kept 1\n", "kept 2\n"]


def test_wait_and_stop(server):
    jobs = client(server)
    job_id = jobs.submit("python x.py")
    with pytest.raises(GetTimeoutError, match=f"job {job_id} is still RUNNING"):
        jobs.wait(job_id, timeout=0.1)
    threading.Timer(0.2, server.finish, (job_id, "FAILED", 3)).start()
    ended = jobs.wait(job_id, timeout=30)
    assert (ended["status"], ended["exit_code"]) == ("FAILED", 3)

    other = jobs.submit("sleep 100")
    assert jobs.stop(other)["status"] == "STOPPED"
    with pytest.raises(JobError, match="already ended") as again:
        jobs.stop(other)
    assert again.value.status_code == 409


def test_errors_say_what_to_do(server, tmp_path, monkeypatch):
    with pytest.raises(JobError, match=r"refused the token \(401.*TASUKI_TOKEN or --token") as denied:
        JobClient(server.url, token="wrong").submit("python x.py")
    assert denied.value.status_code == 401 and isinstance(denied.value, ClusterError)
    assert server.jobs == {}                                           # nothing run

    with pytest.raises(JobError, match="no job 'job-nope'.*tasuki job list") as unknown:
        client(server).status("job-nope")
    assert (unknown.value.status_code, unknown.value.job_id) == (404, "job-nope")

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "data.bin").write_bytes(os.urandom(4000))
    server.package_max_bytes = 1000                                   # the head's limit is lower than ours
    with pytest.raises(JobError, match="TASUKI_JOB_PACKAGE_MAX_BYTES=1000") as too_big:
        client(server).submit("python x.py", working_dir=str(tmp_path / "proj"))
    assert too_big.value.status_code == 413 and server.jobs == {}
    (tmp_path / "proj" / "data.bin").write_bytes(os.urandom(8 << 20))    # more than the sockets buffer:
    with pytest.raises(JobError, match="TASUKI_JOB_PACKAGE_MAX_BYTES=1000"):  # the head hangs up mid-upload
        client(server).submit("python x.py", working_dir=str(tmp_path / "proj"))
    monkeypatch.setenv("TASUKI_JOB_PACKAGE_MAX_BYTES", "1000")       # ours: refused before any upload
    asked = len(server.requests)
    with pytest.raises(JobError, match="TASUKI_JOB_PACKAGE_MAX_BYTES"):
        client(server).submit("python x.py", working_dir=str(tmp_path / "proj"))
    assert len(server.requests) == asked

    with pytest.raises(JobError, match="does that head serve the jobs API"):
        JobClient(server.url + "/not-a-head", token=TOKEN).list()

    closed = FakeJobsServer(HOST, token=TOKEN)
    closed.close()
    with pytest.raises(JobError, match=f"cannot reach the tasuki jobs API at {closed.url}.*--address") as gone:
        JobClient(closed.url, token=TOKEN).list()
    assert gone.value.status_code is None


# --- the CLI ---------------------------------------------------------------------------------------
def job(server: FakeJobsServer, *args: str) -> int:
    return cli.main(["job", args[0], "--address", server.url, "--token", TOKEN, *args[1:]])


def write_script(tmp_path, text: str):
    (tmp_path / "proj").mkdir(exist_ok=True)
    (tmp_path / "proj" / "x.py").write_text(text)
    return str(tmp_path / "proj")


def test_cli_submit_follows_the_logs_and_exits_with_the_jobs_exit_code(runner, tmp_path, capsys):
    proj = write_script(tmp_path, "import os, sys\nprint('mode', os.environ['MODE'], sys.argv[1:])\nsys.exit(3)\n")
    code = job(runner, "submit", "--working-dir", proj, "--env", "MODE=fast", "--metadata", "team=ml",
               "--", sys.executable, "x.py", "a b")
    out, err = capsys.readouterr()
    job_id, output = out.split("\n", 1)
    assert code == 3
    assert output == "mode fast ['a b']\n"
    assert f"{job_id} FAILED (exit code 3)" in err
    assert runner.jobs[job_id]["metadata"] == {"team": "ml"}


def test_cli_submit_no_wait_prints_only_the_id(server, capsys):
    assert job(server, "submit", "--no-wait", "--", "python", "x.py") == 0
    out, err = capsys.readouterr()
    assert out.strip() in server.jobs and "tasuki job logs --follow" in err
    assert server.jobs[out.strip()]["entrypoint"] == "python x.py"


def test_cli_list_status_stop(server, capsys):
    jobs = client(server)
    first = jobs.submit("python a_rather_long_script_name.py --with --many --arguments --that --go --on")
    server.finish(first, "SUCCEEDED", 0)
    second = jobs.submit("python b.py")
    assert job(server, "list") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATUS", "EXIT", "START", "DURATION", "ENTRYPOINT"]
    assert rows[0].split()[:2] == [second, "RUNNING"] and rows[1].split()[:3] == [first, "SUCCEEDED", "0"]
    assert rows[1].endswith("...") and len(rows[1]) < 140

    assert job(server, "status", second) == 0
    assert f"Job {second}: RUNNING" in capsys.readouterr().out
    assert job(server, "stop", second) == 0
    assert f"Job {second}: STOPPED." in capsys.readouterr().out
    assert job(server, "stop", second) == 0
    assert "had already ended: STOPPED" in capsys.readouterr().out
    assert job(server, "status", "job-nope") == 1
    assert "tasuki job list" in capsys.readouterr().err


def test_cli_logs_follow(server, capsys):
    job_id = client(server).submit("python x.py")
    server.append_log(job_id, "one\n")
    done = []
    thread = threading.Thread(target=lambda: done.append(job(server, "logs", "--follow", job_id)))
    thread.start()
    wait_until(lambda: any("follow=1" in path for _, path in server.requests))
    server.append_log(job_id, "two\n")
    server.finish(job_id, "SUCCEEDED", 0)
    thread.join(10)
    assert done == [0] and capsys.readouterr().out == "one\ntwo\n"
    assert job(server, "logs", job_id) == 0 and capsys.readouterr().out == "one\ntwo\n"


def test_cli_errors_for_people(server, capsys, monkeypatch):
    assert cli.main(["job", "list", "--address", server.url, "--token", "wrong"]) == 1
    assert "TASUKI_TOKEN or --token" in capsys.readouterr().err
    assert cli.main(["job", "list", "--address", "tasuki://elsewhere:6380", "--token", "t"]) == 1
    assert "http://elsewhere:8080" in capsys.readouterr().err
    monkeypatch.setenv("TASUKI_ADDRESS", "tcp://elsewhere:6380")
    assert cli.main(["job", "list", "--token", "t"]) == 1
    assert "TASUKI_ADDRESS 'tcp://elsewhere:6380' is the head's runtime port" in capsys.readouterr().err
    assert job(server, "submit", "--env", "NOEQUALS", "--", "true") == 1
    assert "--env 'NOEQUALS' must look like KEY=VALUE" in capsys.readouterr().err
    assert job(server, "submit") == 1
    assert "put it after --" in capsys.readouterr().err


def test_the_tasuki_command_exits_with_the_jobs_exit_code(runner, tmp_path):
    """A real `tasuki` process, with the address and token from the environment."""
    env = {**cluster_env(str(tmp_path / "session")), "TASUKI_ADDRESS": runner.url, "TASUKI_TOKEN": TOKEN}
    done = run_cli(env, "job", "submit", "--", sys.executable, "-c", "print('bye'); raise SystemExit(7)", check=False)
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines()[1:] == ["bye"]


# --- pure parts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("job, status", [
    ({"status": "SUCCEEDED", "exit_code": 0}, 0),
    ({"status": "FAILED", "exit_code": 3}, 3),
    ({"status": "FAILED", "exit_code": -9}, 137),
    ({"status": "FAILED", "exit_code": None}, 1),                 # pip failed, entrypoint not found
    ({"status": "FAILED", "exit_code": 300}, 255),
    ({"status": "STOPPED", "exit_code": -15}, 130),
])
def test_exit_status(job, status):
    assert job_cli.exit_status(job) == status


def test_entrypoint_line_and_tables():
    assert job_cli.entrypoint_line(["--", "python", "x.py", "a b"]) == "python x.py 'a b'"
    assert job_cli.entrypoint_line(["python x.py | tee out"]) == "python x.py | tee out"
    assert job_cli.format_duration(4.25) == "4.2s" and job_cli.format_duration(187) == "3m07s"
    assert job_cli.format_duration(7500) == "2h05m"
    running = {"job_id": "job-1", "status": "RUNNING", "exit_code": None, "entrypoint": "python x.py",
               "submitted_at": 100.0, "start_time": 100.0, "end_time": None, "message": ""}
    assert job_cli.format_jobs([running], now=130.0).splitlines()[1].split()[-3:] == ["30.0s", "python", "x.py"]
    assert "duration:   30.0s" in job_cli.format_job(running, now=130.0)
    assert "No jobs" in job_cli.format_jobs([], now=0)
