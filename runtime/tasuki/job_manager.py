"""Job submission on the head: the jobs the HTTP API (metrics.py) runs as driver processes here.

The head creates one JobManager (head.py) when it serves HTTP; metrics.py's Handler calls it from
its request threads, so every method is thread-safe (one lock over the job table). A job:

  PUT package ──► packages/<sha256>.zip         POST job ──► runs/<id>/work/ (the package unpacked)
  [pip] a venv (--system-site-packages, and the head's own packages) in runs/<id>/venv,
      `pip install` (+ TASUKI_JOB_PIP_ARGS) with its output into the job's log                      PENDING
  sh -c ENTRYPOINT, its own process group, cwd work/, env: os.environ + the job's env +
      TASUKI_ADDRESS, TASUKI_TOKEN, TASUKI_JOB_ID (so tasuki.init() inside joins this cluster), PATH
      led by the head's interpreter's directory (so `python` has tasuki)                            RUNNING
  a pump thread copies its stdout+stderr (one pipe) into the job's bounded, rotating log
  the job's thread reaps it: SUCCEEDED (0) | FAILED (!= 0, pip failed, no such command) | STOPPED,
      kills what the driver left in its group, then `on_end(job_id)`: the head cancels the job's
      tasks and kills its non-detached actors at once (head.end_submission)

All of it under the session directory's jobs/ (packages/, runs/<id>/ with output.log, and jobs.json,
the job table, written on every state change), so a job's status and output outlive its driver, and
a head restarted in place lists them (a job that was running when its head went away is marked
FAILED: no one reaped it).

Logs rotate in two files, output.log and output.log.1, each at most half of TASUKI_JOB_LOG_MAX_BYTES:
offsets are absolute bytes since the job began, and `log_start` is the offset of the oldest byte kept
(log_window holds the arithmetic). Decisions are pure functions below (validate_submission,
next_status, exit_message, mask_env, log_window); the class does the I/O.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import site
import subprocess
import sys
import threading
import time
import zipfile
from typing import Callable, Iterator

from . import config

PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"
ENDED = (SUCCEEDED, FAILED, STOPPED)
LOG_MAX_BYTES = 64 << 20           # bytes of output kept per job (TASUKI_JOB_LOG_MAX_BYTES)
PACKAGE_MAX_BYTES = 100 << 20      # bytes: the largest working-directory zip accepted (TASUKI_JOB_PACKAGE_MAX_BYTES)
UNPACKED_FACTOR = 10               # an unpacked package may be this many times its limit (a zip bomb is refused)
STOP_GRACE_S = 5.0                 # seconds between SIGTERM and SIGKILL to a stopped job's process group
PUMP_DRAIN_S = 1.0                 # seconds the log pump may go on after the driver exits (its children's output)
FOLLOW_POLL_S = 1.0                # seconds a follower waits for news before looking again
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")
FIELDS = ("entrypoint", "job_id", "working_dir", "env", "pip", "metadata")
RESERVED_ENV = ("TASUKI_ADDRESS", "TASUKI_TOKEN", "TASUKI_JOB_ID")


class JobRefused(Exception):
    """A request the manager refuses; `code` is the HTTP status (400, 404, 409, 413)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- pure decisions ---------------------------------------------------------------------
def validate_submission(body, known_ids=()) -> dict:
    """A POST /api/v1/jobs body checked and filled in: {"entrypoint", "job_id" (None: generate one),
    "working_dir", "env", "pip", "metadata"}; JobRefused 400 naming the field and the value, or 409
    when job_id is in `known_ids`."""
    if not isinstance(body, dict):
        raise JobRefused(400, f"a job submission must be a JSON object with an 'entrypoint', got {type(body).__name__}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise JobRefused(400, f"unknown field(s) {', '.join(map(repr, unknown))} in the job submission; "
                            f"the fields are {', '.join(FIELDS)}")
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise JobRefused(400, f"'entrypoint' must be a non-empty shell command line such as 'python script.py', "
                            f"got {entrypoint!r}")
    job_id = body.get("job_id")
    if job_id is not None and (not isinstance(job_id, str) or not JOB_ID.match(job_id)):
        raise JobRefused(400, f"'job_id' must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or "
                            f"digit), got {job_id!r}; or leave it out for a generated one")
    if job_id == "packages":
        raise JobRefused(400, "'job_id' may not be 'packages' (the path of the uploads); choose another")
    if job_id in known_ids:
        raise JobRefused(409, f"a job {job_id!r} exists already; choose another job_id, or leave it out")
    working_dir = body.get("working_dir")
    if working_dir is not None and (not isinstance(working_dir, str) or not SHA256.match(working_dir)):
        raise JobRefused(400, f"'working_dir' must be the sha256 (64 lowercase hex digits) of a package uploaded with "
                            f"PUT /api/v1/jobs/packages/<sha256>, got {working_dir!r}")
    env = _string_map(body.get("env"), "env")
    for name in env:
        if not ENV_NAME.match(name):
            raise JobRefused(400, f"'env' key {name!r} is not an environment variable name (letters, digits, '_')")
        if name in RESERVED_ENV:
            raise JobRefused(400, f"'env' may not set {name}: the head sets it so that the job joins this cluster")
    pip = body.get("pip") or []
    if not isinstance(pip, list) or not all(isinstance(p, str) and p.strip() for p in pip):
        raise JobRefused(400, f"'pip' must be a list of requirements such as [\"requests==2.32.3\"], got {pip!r}")
    options = [p for p in pip if p.strip().startswith("-")]
    if options:
        raise JobRefused(400, f"'pip' holds requirements, not pip options: {options!r}")
    return {"entrypoint": entrypoint, "job_id": job_id, "working_dir": working_dir, "env": env,
            "pip": [p.strip() for p in pip], "metadata": _string_map(body.get("metadata"), "metadata")}


def _string_map(value, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise JobRefused(400, f"{name!r} must be an object of strings to strings, got {value!r}")
    return dict(value)


# (status, event) -> the next status; an event not listed leaves a job as it is (an ended job stays ended)
TRANSITIONS = {
    (PENDING, "started"): RUNNING, (PENDING, "pip_failed"): FAILED, (PENDING, "start_failed"): FAILED,
    (PENDING, "stopped"): STOPPED, (RUNNING, "stopped"): STOPPED,
    (RUNNING, "succeeded"): SUCCEEDED, (RUNNING, "failed"): FAILED,
}


def next_status(status: str, event: str) -> str:
    """The status after `event` (started, pip_failed, start_failed, stopped, succeeded, failed)."""
    return TRANSITIONS.get((status, event), status)


def exit_event(exit_code: int, stopping: str) -> str:
    """The event a driver's exit is: stopped when it was being stopped (`stopping` says why), else by its
    exit code."""
    return "stopped" if stopping else "succeeded" if exit_code == 0 else "failed"


def exit_message(exit_code: int, entrypoint: str, tail: str) -> str:
    """What a job's end says, from the entrypoint's exit code and the last bytes of its output."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = "a signal"
        return f"the entrypoint was killed by {name}({exit_code})"
    if exit_code == 0:
        return "the entrypoint exited with 0"
    words = entrypoint.split() or [""]
    lines = [line for line in tail.splitlines() if line.strip()]
    last = lines[-1].strip()[:300] if lines else ""
    if exit_code == 127 and "not found" in tail:
        return (f"the entrypoint exited with 127: command not found: {words[0]} (is it installed on the head's "
                f"machine and on PATH?): {last}")
    if exit_code == 126:
        return f"the entrypoint exited with 126: {words[0]} is not executable: {last}"
    if exit_code == 2 and "can't open file" in tail:
        return (f"the entrypoint exited with 2: the script was not found: {last}. Is it in the working directory "
                f"you uploaded (paths are relative to it)?")
    return f"the entrypoint exited with {exit_code}" + (f"; its last output line: {last}" if last else "")


def mask_env(env: dict) -> dict:
    """The job's env as the API shows it: values of keys containing TOKEN, SECRET, PASSWORD or KEY as '***'."""
    return {k: "***" if any(word in k.upper() for word in SECRET_WORDS) else v for k, v in env.items()}


def log_window(offset: int, log_start: int, log_end: int) -> tuple[int, int]:
    """(first offset to send, bytes to send) for a reader asking from `offset`, when the log keeps the bytes
    [log_start, log_end): a reader asking for dropped bytes gets from the oldest kept; one past the end, nothing."""
    first = min(max(offset, log_start), log_end)
    return first, log_end - first


def rotate_at(max_bytes: int) -> int:
    """The size at which output.log becomes output.log.1 (the old .1 dropped), so that both together never
    keep more than `max_bytes` (at least 1 byte per file)."""
    return max(1, max_bytes // 2)


def package_problems(sizes: list[tuple[str, int]], limit: int) -> str | None:
    """Why a package's entries (name, uncompressed size) may not be unpacked, or None."""
    total = sum(size for _, size in sizes)
    if total > limit:
        return (f"the package unpacks to {total} bytes, over {limit} (TASUKI_JOB_PACKAGE_MAX_BYTES x "
                f"{UNPACKED_FACTOR}); leave large data out of the working directory")
    for name, _ in sizes:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or ".." in parts:
            return f"the package holds the path {name!r}, outside its directory; zip a directory's contents only"
    return None


def job_view(job: dict) -> dict:
    """A job as the API shows it (no internal fields, secrets masked)."""
    return {"job_id": job["job_id"], "status": job["status"], "entrypoint": job["entrypoint"],
            "message": job["message"], "exit_code": job["exit_code"], "submitted_at": job["submitted_at"],
            "start_time": job["start_time"], "end_time": job["end_time"], "metadata": job["metadata"],
            "env": mask_env(job["env"]), "pip": job["pip"], "working_dir": job["working_dir"],
            "driver_pid": job["driver_pid"]}


# --- the log ----------------------------------------------------------------------------
class JobLog:
    """A job's output in output.log and output.log.1; `start` and `end` are absolute byte offsets.
    One writer (the pump or the pip step), any number of readers; the manager's lock guards it."""

    def __init__(self, directory: str, max_bytes: int, start: int = 0, end: int = 0) -> None:
        self.path = os.path.join(directory, "output.log")
        self.max_bytes = max_bytes
        kept = sum(os.path.getsize(p) for p in (self.path + ".1", self.path) if os.path.exists(p))
        self.end = max(end, start + kept)     # a head that died wrote its table before the last output
        self.start = self.end - kept

    def append(self, data: bytes) -> None:
        while data:
            current = self.end - self._current_start()
            room = rotate_at(self.max_bytes) - current
            if room <= 0:
                self._rotate()
                continue
            with open(self.path, "ab") as f:
                f.write(data[:room])
            self.end += len(data[:room])
            data = data[room:]

    def _current_start(self) -> int:
        try:
            return self.end - os.path.getsize(self.path)
        except FileNotFoundError:
            return self.end

    def _rotate(self) -> None:
        os.replace(self.path, self.path + ".1")
        self.start = self.end - os.path.getsize(self.path + ".1")

    def read(self, offset: int, limit: int = 1 << 20) -> tuple[int, bytes]:
        """(the offset of the first byte returned, up to `limit` bytes from `offset`)."""
        first, count = log_window(offset, self.start, self.end)
        count = min(count, limit)
        out = b""
        current_start = self._current_start()
        if first < current_start and count:
            with open(self.path + ".1", "rb") as f:
                f.seek(first - self.start)
                out = f.read(min(count, current_start - first))
        if len(out) < count:
            try:
                with open(self.path, "rb") as f:
                    f.seek(first + len(out) - current_start)
                    out += f.read(count - len(out))
            except FileNotFoundError:
                pass
        return first, out


# --- the manager ------------------------------------------------------------------------
class JobManager:
    """The head's jobs: submit, list, status, logs, stop; state in `<session_dir>/jobs.json`."""

    def __init__(self, session_dir: str, head_address: str, token: str,
                 on_end: Callable[[str], None] | None = None) -> None:
        self.root = config.private_dir(session_dir)        # job output may hold secrets
        os.makedirs(os.path.join(self.root, "packages"), mode=0o700, exist_ok=True)
        self.head_address, self.token = head_address, token
        self.on_end = on_end or (lambda job_id: None)
        self.log_max = int(config.env_float("JOB_LOG_MAX_BYTES", LOG_MAX_BYTES))
        self.package_max = int(config.env_float("JOB_PACKAGE_MAX_BYTES", PACKAGE_MAX_BYTES))
        self.lock = threading.Condition()        # the job table, the logs; notified on new output and ends
        self.jobs: dict[str, dict] = {}
        self.logs: dict[str, JobLog] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.load()

    # state file
    def table_path(self) -> str:
        return os.path.join(self.root, "jobs.json")

    def load(self) -> None:
        try:
            with open(self.table_path()) as f:
                saved = json.load(f)
        except (FileNotFoundError, ValueError):
            return
        for job in saved:
            if job["status"] not in ENDED:     # its head went away: no one reaps it any more
                job.update(status=FAILED, end_time=job.get("end_time") or time.time(),
                           message=f"the head that ran this job stopped while it was {job['status']} "
                                   f"(driver pid {job.get('driver_pid')})")
            self.jobs[job["job_id"]] = job
            self.logs[job["job_id"]] = JobLog(self.job_dir(job["job_id"]), self.log_max,
                                              job.get("log_start", 0), job.get("log_end", 0))
        self.save()

    def save(self) -> None:
        """Write the job table (under the lock)."""
        for job_id, log in self.logs.items():
            self.jobs[job_id].update(log_start=log.start, log_end=log.end)
        tmp = self.table_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(list(self.jobs.values()), f)
        os.replace(tmp, self.table_path())

    def job_dir(self, job_id: str) -> str:
        return os.path.join(self.root, "runs", job_id)

    # packages
    def package_path(self, sha: str) -> str:
        return os.path.join(self.root, "packages", sha + ".zip")

    def has_package(self, sha: str) -> bool:
        return os.path.exists(self.package_path(sha))

    def check_package_size(self, length: int | None) -> None:
        """JobRefused 413 (naming the limit) for a package of `length` bytes, 400 without a length."""
        if length is None:
            raise JobRefused(400, "a package upload needs a Content-Length header (the zip's size in bytes)")
        if length > self.package_max:
            raise JobRefused(413, f"the working directory's package is {length} bytes, over the limit of "
                                f"{self.package_max} bytes (TASUKI_JOB_PACKAGE_MAX_BYTES on the head); leave large "
                                f"data out of it (read it from storage in the job), or raise the limit")

    def store_package(self, sha: str, length: int, read: Callable[[int], bytes]) -> tuple[bool, int]:
        """Stream an uploaded zip to disk, checking its sha256 and that it is a zip it is safe to unpack.
        Returns (created, bytes); JobRefused 400 for a short body, another sha256, or not a zip."""
        import hashlib
        if not SHA256.match(sha):
            raise JobRefused(400, f"the package path must end in the zip's sha256 (64 lowercase hex digits), got {sha!r}")
        self.check_package_size(length)
        final = self.package_path(sha)
        tmp = f"{final}.{secrets.token_hex(4)}.part"
        digest, got = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                while got < length:
                    chunk = read(min(1 << 20, length - got))
                    if not chunk:
                        raise JobRefused(400, f"the upload ended after {got} of the {length} bytes of its Content-Length")
                    digest.update(chunk)
                    f.write(chunk)
                    got += len(chunk)
            if digest.hexdigest() != sha:
                raise JobRefused(400, f"the uploaded package's sha256 is {digest.hexdigest()}, not {sha} as its path "
                                    f"says; upload it again")
            try:
                with zipfile.ZipFile(tmp) as z:
                    problem = package_problems([(i.filename, i.file_size) for i in z.infolist()],
                                               self.package_max * UNPACKED_FACTOR)
            except zipfile.BadZipFile as e:
                problem = f"the package is not a zip file ({e}); zip the working directory"
            if problem:
                raise JobRefused(400, problem)
            created = not os.path.exists(final)
            os.replace(tmp, final)
            return created, got
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # submit
    def submit(self, body, now: float | None = None) -> str:
        """Validate and start a job (its pip step and driver in a thread); returns its id."""
        with self.lock:
            spec = validate_submission(body, self.jobs)
            if spec["working_dir"] and not self.has_package(spec["working_dir"]):
                raise JobRefused(400, f"no package {spec['working_dir']} was uploaded to this head; PUT it to "
                                    f"/api/v1/jobs/packages/{spec['working_dir']} first")
            job_id = spec["job_id"] or f"job-{secrets.token_hex(6)}"
            os.makedirs(os.path.join(self.job_dir(job_id), "work"), mode=0o700, exist_ok=True)
            job = {**spec, "job_id": job_id, "status": PENDING, "message": "", "exit_code": None,
                   "submitted_at": now or time.time(), "start_time": None, "end_time": None, "driver_pid": None,
                   "stopping": ""}                     # why it is being stopped, once it is
            self.jobs[job_id] = job
            self.logs[job_id] = JobLog(self.job_dir(job_id), self.log_max)
            self.save()
        threading.Thread(target=self.run, args=(job_id,), name=f"tasuki-job-{job_id}", daemon=True).start()
        return job_id

    def event(self, job_id: str, event: str, **fields) -> None:
        """Apply a state event and fields to a job, save, and wake followers (takes the lock)."""
        with self.lock:
            job = self.jobs[job_id]
            status = next_status(job["status"], event)
            if status != job["status"]:
                job.update(fields)
            job["status"] = status
            self.save()
            self.lock.notify_all()

    def run(self, job_id: str) -> None:
        """The job's thread: unpack, pip, start the driver, pump its output, reap it, tell the head."""
        job, log = self.jobs[job_id], self.logs[job_id]
        work = os.path.join(self.job_dir(job_id), "work")
        env = {**os.environ, **job["env"], "TASUKI_ADDRESS": self.head_address, "TASUKI_TOKEN": self.token,
               "TASUKI_JOB_ID": job_id}
        # `python` is the interpreter the head runs on (it has tasuki), unless the job's env sets PATH
        if "PATH" not in job["env"]:
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        try:
            if job["working_dir"]:
                with zipfile.ZipFile(self.package_path(job["working_dir"])) as z:
                    z.extractall(work)
            if job["pip"]:
                ok, message = self.install(job_id, env)
                if not ok:
                    if job["stopping"]:
                        return self.finish(job_id, "stopped", None, f"{job['stopping']} while its pip requirements "
                                                                    f"installed")
                    return self.finish(job_id, "pip_failed", None, message)
            if job["stopping"]:
                return self.finish(job_id, "stopped", None, f"{job['stopping']} before its driver started")
            proc = subprocess.Popen(["/bin/sh", "-c", job["entrypoint"]], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, zipfile.BadZipFile) as e:
            return self.finish(job_id, "start_failed", None, f"the job could not start: {type(e).__name__}: {e}")
        with self.lock:
            self.procs[job_id] = proc
        self.event(job_id, "started", start_time=time.time(), driver_pid=proc.pid)
        if job["stopping"]:                      # stop() came while it started
            self.signal_group(proc, signal.SIGTERM)
        pump = threading.Thread(target=self.pump, args=(job_id, proc.stdout), daemon=True)
        pump.start()
        code = proc.wait()
        pump.join(PUMP_DRAIN_S)
        self.signal_group(proc, signal.SIGKILL)   # what the driver left running ends with it
        pump.join()
        with self.lock:
            self.procs.pop(job_id, None)
            tail = log.read(max(log.start, log.end - 2048))[1].decode(errors="replace")
            stopping = job["stopping"]
        message = exit_message(code, job["entrypoint"], tail)
        if stopping:
            message = f"{stopping}: {message}"
        self.finish(job_id, exit_event(code, stopping), code, message)

    def finish(self, job_id: str, event: str, code: int | None, message: str) -> None:
        self.event(job_id, event, exit_code=code, end_time=time.time(), message=message)
        try:
            self.on_end(job_id)
        except Exception as e:                   # the head is going away: nothing of the job is left to end
            print(f"tasuki head: could not end job {job_id}'s tasks and actors: {e}", file=sys.stderr)

    def pump(self, job_id: str, pipe) -> None:
        """Copy a process's output into the job's log until EOF."""
        fd = pipe.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                with self.lock:
                    self.logs[job_id].append(data)
                    self.lock.notify_all()
        finally:
            pipe.close()

    def install(self, job_id: str, env: dict) -> tuple[bool, str]:
        """The job's pip environment: a venv seeing the head's packages, `pip install` into it, its
        output in the job's log. Returns (ok, message); on success env's PATH leads to the venv."""
        venv = os.path.join(self.job_dir(job_id), "venv")
        self.write_log(job_id, f"tasuki: installing {' '.join(self.jobs[job_id]['pip'])} into {venv}\n".encode())
        code = self.run_step(job_id, [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv])
        if code != 0:
            return False, f"creating the job's virtual environment failed (exit {code}); see the job's logs"
        python = os.path.join(venv, "bin", "python")
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True).stdout.strip()
        # the head's own site-packages (a venv's too, with its editable installs), after the job's
        with open(os.path.join(purelib, "_tasuki_head.pth"), "w") as f:
            f.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages()) + "\n")
        if subprocess.run([python, "-c", "import pip"], capture_output=True).returncode != 0:
            # an image without pip (tasuki's own: its venv has none): the job's environment gets one
            self.write_log(job_id, b"tasuki: no pip on the head's Python; installing one with ensurepip\n")
            if self.run_step(job_id, [python, "-m", "ensurepip", "--default-pip"], env) != 0:
                return False, "no pip on the head's Python, and ensurepip could not install one; see the job's logs"
        extra = shlex.split(config.env("JOB_PIP_ARGS", ""))
        packages = self.jobs[job_id]["pip"]
        code = self.run_step(job_id, [python, "-m", "pip", "install", "--disable-pip-version-check",
                                      "--no-input", *extra, *packages], env)
        if code != 0:
            return False, (f"pip could not install {' '.join(packages)} (pip exited with {code}); its output is in "
                           f"the job's logs")
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = venv
        return True, ""

    def run_step(self, job_id: str, argv: list[str], env: dict | None = None) -> int:
        """Run a setup command with its output into the job's log; stop() ends it."""
        if self.jobs[job_id]["stopping"]:
            return -signal.SIGTERM
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, cwd=self.job_dir(job_id), start_new_session=True)
        with self.lock:
            self.procs[job_id] = proc
        self.pump(job_id, proc.stdout)
        code = proc.wait()
        with self.lock:
            self.procs.pop(job_id, None)
        return code

    def write_log(self, job_id: str, data: bytes) -> None:
        with self.lock:
            self.logs[job_id].append(data)
            self.lock.notify_all()

    # queries
    def get(self, job_id: str) -> dict:
        with self.lock:
            if job_id not in self.jobs:
                known = ", ".join(sorted(self.jobs)[-10:]) or "none"
                raise JobRefused(404, f"no job {job_id!r} on this head (jobs: {known}); `tasuki job list` shows them")
            return job_view(self.jobs[job_id])

    def list(self) -> list[dict]:
        with self.lock:
            return [job_view(j) for j in sorted(self.jobs.values(), key=lambda j: j["submitted_at"], reverse=True)]

    def read_logs(self, job_id: str, offset: int = 0) -> tuple[int, bytes]:
        """(the offset of the first byte returned, the job's output from `offset` as far as it goes now)."""
        self.get(job_id)
        with self.lock:
            log = self.logs[job_id]
            first, count = log_window(offset, log.start, log.end)
            return first, log.read(first, count)[1] if count else b""

    def follow_logs(self, job_id: str, offset: int = 0) -> Iterator[bytes]:
        """The job's output from `offset` as it comes, until the job has ended and all of it was given.
        (The first byte's offset is read_logs(job_id, offset)[0]: a dropped offset starts at the oldest kept.)"""
        self.get(job_id)
        while True:
            with self.lock:
                log = self.logs[job_id]
                ended = self.jobs[job_id]["status"] in ENDED
                first, data = log.read(offset)
                if not data:
                    if ended:
                        return
                    self.lock.wait(FOLLOW_POLL_S)
                    continue
            offset = first + len(data)
            yield data

    # stop
    def stop(self, job_id: str, grace_s: float = STOP_GRACE_S) -> dict:
        """SIGTERM the job's process group, SIGKILL after `grace_s`; returns the job once it has ended
        (STOPPED). JobRefused 409 for a job that had ended already."""
        job = self.get(job_id)
        with self.lock:
            if job["status"] in ENDED:
                raise JobRefused(409, f"job {job_id} has already ended ({job['status']}: {job['message']}); "
                                    f"nothing to stop")
            self.jobs[job_id]["stopping"] = "stopped on request"
            proc = self.procs.get(job_id)
        if proc is not None:
            self.signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        with self.lock:
            while self.jobs[job_id]["status"] not in ENDED and time.monotonic() < deadline:
                self.lock.wait(deadline - time.monotonic())
            proc = self.procs.get(job_id)
        if proc is not None:
            self.signal_group(proc, signal.SIGKILL)
        with self.lock:                  # the watcher reaps it and tells the head at once
            while self.jobs[job_id]["status"] not in ENDED:
                self.lock.wait(FOLLOW_POLL_S)
        return self.get(job_id)

    @staticmethod
    def signal_group(proc: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """The head stops: its running jobs' process groups are killed (the watchers record STOPPED)."""
        self.on_end = lambda job_id: None        # the head's loop answers no more
        deadline = time.monotonic() + 2.0
        with self.lock:
            running = [job_id for job_id, job in self.jobs.items() if job["status"] not in ENDED]
            for job_id in running:
                self.jobs[job_id]["stopping"] = "stopped as the head shut down"
                if job_id in self.procs:
                    self.signal_group(self.procs[job_id], signal.SIGKILL)
            while any(self.jobs[j]["status"] not in ENDED for j in running) and time.monotonic() < deadline:
                self.lock.wait(0.1)          # their threads record STOPPED
