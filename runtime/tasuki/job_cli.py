"""`tasuki job ...`: submit a script to a cluster and follow it, over the head's jobs API (jobs.py).

    tasuki job submit [--address URL] [--token T] [--working-dir DIR] [--env K=V]... [--pip PKG]...
                      [--job-id ID] [--metadata K=V]... [--no-wait] -- python script.py args
    tasuki job logs [--follow] ID
    tasuki job status ID
    tasuki job stop ID
    tasuki job list

cli.py builds the `job` parser with add_parser() and calls run(); each verb is a thin wrapper over a
JobClient call, with format_jobs and format_job (pure) for what people read. `submit` prints the job id
on stdout (alone with --no-wait, so `ID=$(tasuki job submit --no-wait -- ...)` works), then the job's
output, and exits with the job's exit code (exit_status). Notes for people go to stderr.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from .cli import CliError
from .exceptions import GetTimeoutError, JobError
from .jobs import ENDED, JobClient

STOP_WAIT_S = 15.0            # seconds `tasuki job stop` waits for the job to be STOPPED (SIGKILL comes after 5 s)
ENTRYPOINT_WIDTH = 48         # characters of the entrypoint in `tasuki job list`
EXIT_STOPPED = 130            # the exit status of `submit` for a STOPPED job (as for Ctrl-C)


def add_parser(commands) -> None:
    """The `job` command and its verbs, on cli.py's subparsers."""
    job = commands.add_parser("job", help="submit a script to a cluster, follow its logs, stop it, list jobs")
    verbs = job.add_subparsers(dest="job_command", metavar="{submit,logs,status,stop,list}")
    verbs.required = True

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help)
        parser.add_argument("--address", help="the head's HTTP address, http://HOST:PORT (8080 in pods; env "
                                              "TASUKI_ADDRESS; default: the cluster started on this machine)")
        parser.add_argument("--token", help="the cluster's token (default: TASUKI_TOKEN, else the cluster file's)")
        return parser

    submit = verb("submit", "run a command on the head's machine as a job: `tasuki job submit -- python x.py`")
    submit.add_argument("--working-dir", help="a local directory to upload; the job runs in its copy "
                                              "(__pycache__, .git and .venv are left out)")
    submit.add_argument("--env", action="append", default=[], metavar="K=V", help="an environment variable of the job")
    submit.add_argument("--pip", action="append", default=[], metavar="PKG",
                        help="a pip requirement installed into the job's own environment")
    submit.add_argument("--job-id", help="the job's id (default: a new job-<12 hex>)")
    submit.add_argument("--metadata", action="append", default=[], metavar="K=V", help="a label kept with the job")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and exit without following")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="after --: the command line (one argument is used as a shell line as it is)")
    logs = verb("logs", "print a job's output")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.add_argument("job_id", metavar="ID")
    verb("status", "show a job's status").add_argument("job_id", metavar="ID")
    verb("stop", "stop a job (its driver, tasks and non-detached actors)").add_argument("job_id", metavar="ID")
    verb("list", "list the cluster's jobs, newest first")


# --- pure parts -----------------------------------------------------------------------------------
def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    """['K=V', ...] -> {K: V}; CliError naming the flag and the value otherwise."""
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} {value!r} must look like KEY=VALUE")
        pairs[key] = rest
    return pairs


def entrypoint_line(words: list[str]) -> str:
    """The shell command line from what follows `--`: one word is taken as a line already
    (`-- "python x.py | tee out"`), several are quoted for the shell (`-- python x.py "a b"`)."""
    words = words[1:] if words[:1] == ["--"] else words
    if not words:
        raise CliError("no command to run: put it after --, e.g. `tasuki job submit -- python script.py`")
    return words[0] if len(words) == 1 else shlex.join(words)


def exit_status(job: dict) -> int:
    """The exit status of `tasuki job submit` for an ended job: 0, the job's exit code (128+N for a
    signal N), 1 for FAILED without one, EXIT_STOPPED for STOPPED."""
    if job["status"] == "SUCCEEDED":
        return 0
    if job["status"] == "STOPPED":
        return EXIT_STOPPED
    code = job.get("exit_code")
    if not isinstance(code, int) or code == 0:
        return 1
    return 128 - code if code < 0 else min(code, 255)


def _clock(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def format_duration(seconds: float) -> str:
    """'4.2s', '3m07s', '2h05m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def duration(job: dict, now: float) -> str:
    start = job.get("start_time")
    if not start:
        return "-"
    return format_duration(max(0.0, (job.get("end_time") or now) - start))


def format_jobs(jobs: list[dict], now: float) -> str:
    """The `tasuki job list` table (pure)."""
    if not jobs:
        return "No jobs on this cluster yet; submit one with `tasuki job submit -- python script.py`."
    rows = [("ID", "STATUS", "EXIT", "START", "DURATION", "ENTRYPOINT")]
    for job in jobs:
        entry = " ".join(job.get("entrypoint", "").split())
        if len(entry) > ENTRYPOINT_WIDTH:
            entry = entry[:ENTRYPOINT_WIDTH - 3] + "..."
        code = job.get("exit_code")
        rows.append((job["job_id"], job["status"], "-" if code is None else str(code), _clock(job.get("start_time")),
                     duration(job, now), entry))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def format_job(job: dict, now: float) -> str:
    """The `tasuki job status` text (pure)."""
    code = job.get("exit_code")
    lines = [f"Job {job['job_id']}: {job['status']}" + ("" if code is None else f" (exit code {code})"),
             f"  entrypoint: {job.get('entrypoint', '')}",
             f"  submitted:  {_clock(job.get('submitted_at'))}",
             f"  started:    {_clock(job.get('start_time'))}",
             f"  ended:      {_clock(job.get('end_time'))}",
             f"  duration:   {duration(job, now)}"]
    if job.get("message"):
        lines.append(f"  message:    {job['message']}")
    for field in ("env", "metadata"):
        if job.get(field):
            lines.append(f"  {field + ':':<11} " + ", ".join(f"{k}={v}" for k, v in sorted(job[field].items())))
    if job.get("pip"):
        lines.append(f"  pip:        {' '.join(job['pip'])}")
    if job.get("working_dir"):
        lines.append(f"  working dir: package {job['working_dir'][:12]}")
    return "\n".join(lines)


# --- the verbs --------------------------------------------------------------------------------------
def run(args) -> int:
    """Run `tasuki job <verb>`; JobError becomes CliError (cli.main prints it, exit 1)."""
    try:
        return _VERBS[args.job_command](args)
    except JobError as e:
        raise CliError(str(e)) from None


def _client(args) -> JobClient:
    from_env = "address" in getattr(args, "from_env", {})      # then JobClient reads it and names TASUKI_ADDRESS
    return JobClient(None if from_env else args.address, args.token)


def submit(args) -> int:
    entrypoint = entrypoint_line(args.entrypoint)
    env, metadata = parse_pairs(args.env, "--env"), parse_pairs(args.metadata, "--metadata")
    client = _client(args)
    job_id = client.submit(entrypoint, working_dir=args.working_dir, env=env, pip=args.pip, job_id=args.job_id,
                           metadata=metadata)
    print(job_id, flush=True)
    if args.no_wait:
        print(f"Follow it with `tasuki job logs --follow {job_id}`; stop it with `tasuki job stop {job_id}`.",
              file=sys.stderr)
        return 0
    print(f"tasuki job: following the output of {job_id} until it ends (Ctrl-C stops following, not the job)",
          file=sys.stderr, flush=True)
    return _follow(client, job_id)


def _follow(client: JobClient, job_id: str) -> int:
    """Print the job's output until it ends; the job's exit status (see exit_status)."""
    try:
        for line in client.follow_logs(job_id):
            sys.stdout.write(line)
            sys.stdout.flush()
        job = client.wait(job_id)
    except KeyboardInterrupt:
        print(f"\ntasuki job: stopped following; job {job_id} keeps running. Follow it again with "
              f"`tasuki job logs --follow {job_id}`, stop it with `tasuki job stop {job_id}`.", file=sys.stderr)
        return 130
    ended = f" (exit code {job['exit_code']})" if job.get("exit_code") is not None else ""
    message = f": {job['message']}" if job.get("message") else ""
    print(f"tasuki job: {job_id} {job['status']}{ended} after {duration(job, time.time())}{message}", file=sys.stderr)
    return exit_status(job)


def logs(args) -> int:
    client = _client(args)
    if args.follow:
        for line in client.follow_logs(args.job_id):
            sys.stdout.write(line)
            sys.stdout.flush()
    else:
        sys.stdout.write(client.logs(args.job_id))
    return 0


def status(args) -> int:
    print(format_job(_client(args).status(args.job_id), time.time()))
    return 0


def stop(args) -> int:
    client = _client(args)
    try:
        job = client.stop(args.job_id)
    except JobError as e:
        if e.status_code != 409:
            raise
        job = client.status(args.job_id)
        print(f"Job {args.job_id} had already ended: {job['status']}.")
        return 0
    if job["status"] not in ENDED:
        try:
            job = client.wait(args.job_id, timeout=STOP_WAIT_S)
        except GetTimeoutError:
            raise CliError(f"job {args.job_id} is still {job['status']} {STOP_WAIT_S:g} s after the stop request; "
                           f"see `tasuki job status {args.job_id}` and the head's log") from None
    print(f"Job {args.job_id}: {job['status']}.")
    return 0


def list_jobs(args) -> int:
    print(format_jobs(_client(args).list(), time.time()))
    return 0


_VERBS = {"submit": submit, "logs": logs, "status": status, "stop": stop, "list": list_jobs}
