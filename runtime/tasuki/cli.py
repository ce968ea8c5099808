"""The `tasuki` command: start a head or a node agent, show a cluster's status, stop it.

    tasuki start --head [--port 6380] [--num-cpus N] [--metrics-port 8080] [--metrics-host IP] [--block] ...
    tasuki start --address HOST:PORT [--num-cpus N] [--memory 8G] [--resources '{"ssd": 1}']
                 [--labels '{"zone": "a"}'] [--block] ...
    tasuki status [--address HOST:PORT]
    tasuki stop
    tasuki job submit|logs|status|stop|list ...     (job_cli.py: jobs over the head's HTTP API)

`start` runs `python -m tasuki.head` and `python -m tasuki.node` as detached processes (their own
session, output in log files under config.session_dir()/logs), waits until the head answers and
the node has registered, and records what it started in config.cluster_file():

    {"address": "tcp://IP:PORT", "token": ..., "head_pid": N | null, "node_pids": [...],
     "metrics": "http://IP:PORT" | null, "cli_pid": N (only while `--block` runs)}

That file is how `init(address="auto")`, `tasuki status` and `tasuki stop` find the cluster; it
lives in a 0700 directory and is written 0600, because it holds the token. The token travels to
the children in TASUKI_TOKEN, never on a command line (other users can read those in /proc).
Both the directory and the file are checked before they are trusted (config.private_dir).
`start --head` refuses while the head it names runs; after a crash it stops what that head left
running and clears its files (clean_stale).
With `--block` the command stays in the foreground (a container's main process): the children
hold a lifeline pipe to it, it stops them on SIGTERM/SIGINT, and it exits when one of them dies.
On a signal it first passes SIGTERM on (`leave`): a node agent drains (its work and the objects only
it holds move to other nodes) before the lifeline closes; a head tells its nodes and drivers.

Every flag may also come from a TASUKI_* environment variable (see ENV_FLAGS); flags win.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from . import config, launcher

START_TIMEOUT_S = 60.0          # seconds to wait for the head's ready file and the node's registration
CONNECT_TIMEOUT_S = 10.0        # seconds to wait for the head's WELCOME
STOP_TIMEOUT_S = 15.0           # seconds between SIGTERM and SIGKILL in `tasuki stop`
MIB = 1 << 20

# flag attribute -> environment variable read when the flag is absent
ENV_FLAGS = {
    "port": "TASUKI_PORT", "num_cpus": "TASUKI_NUM_CPUS", "num_gpus": "TASUKI_NUM_GPUS",
    "resources": "TASUKI_RESOURCES", "node_ip_address": "TASUKI_NODE_IP_ADDRESS",
    "object_store_memory": "TASUKI_OBJECT_STORE_MEMORY", "metrics_port": "TASUKI_METRICS_PORT",
    "metrics_host": "TASUKI_METRICS_HOST", "memory": "TASUKI_MEMORY", "labels": "TASUKI_LABELS",
    "address": "TASUKI_ADDRESS", "token": "TASUKI_TOKEN", "store_dir": "TASUKI_STORE_DIR",
}


class CliError(Exception):
    """A problem the person at the terminal can fix; the message says how. Exit code 1."""


# --- arguments --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasuki", description="Start, inspect and stop tasuki clusters.")
    commands = parser.add_subparsers(dest="command", metavar="{start,status,stop,job}")
    commands.required = True

    start = commands.add_parser(
        "start", help="start a head (--head) or a node agent joining one (--address)",
        epilog="Every flag may also come from TASUKI_<FLAG> (TASUKI_PORT, TASUKI_NUM_CPUS, TASUKI_RESOURCES, "
               "TASUKI_ADDRESS, TASUKI_TOKEN...); flags win. Prefer TASUKI_TOKEN to --token: other users "
               "can read command lines.")
    role = start.add_mutually_exclusive_group()
    role.add_argument("--head", action="store_true", help="start the head and a node agent on this machine")
    role.add_argument("--address", help="HOST:PORT of the head to join (env TASUKI_ADDRESS)")
    start.add_argument("--port", help=f"head port (default {config.DEFAULT_PORT}; 0 picks a free one)")
    start.add_argument("--metrics-port", help=f"head HTTP port for /metrics and /api/v1 "
                                              f"(default {config.DEFAULT_METRICS_PORT}; 0 picks a free one)")
    start.add_argument("--metrics-host", help="address the head's HTTP port listens on (default: the node IP "
                                              "address; 0.0.0.0 for all interfaces, as in a pod)")
    start.add_argument("--num-cpus", help="CPUs this node offers, fractions allowed: 1.5 (default: all)")
    start.add_argument("--memory", help="bytes of memory (or 512M, 2G) tasks and actors may reserve with "
                                        "memory=... (default: the memory available at start, less the object store)")
    start.add_argument("--labels", help="this node's labels as JSON, e.g. '{\"zone\": \"a\"}': tasks and actors "
                                        "choose nodes by them with label_selector")
    start.add_argument("--num-gpus", help="GPUs this node offers (default: those detected)")
    start.add_argument("--resources", help="custom resources as JSON, e.g. '{\"ssd\": 1}'")
    start.add_argument("--node-ip-address", help="the address other machines reach this node at")
    start.add_argument("--object-store-memory", help="object store size in bytes (or 512M, 2G)")
    start.add_argument("--store-dir", help=f"directory of the object store file (default {config.SHM_DIR}); "
                                           f"memory-backed is fastest, any directory with room works")
    start.add_argument("--token", help="cluster token (default: TASUKI_TOKEN, else a new one for --head)")
    start.add_argument("--block", action="store_true", help="stay in the foreground; stop everything on exit")

    status = commands.add_parser("status", help="show nodes, resources and tasks of a running cluster")
    status.add_argument("--address", help="HOST:PORT of the head (default: the cluster started here)")
    status.add_argument("--token", help="cluster token (default: TASUKI_TOKEN or the cluster file)")

    stop = commands.add_parser("stop", help="stop the head and node agents started on this machine")
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S, help="seconds before SIGKILL")

    from . import job_cli
    job_cli.add_parser(commands)
    return parser


def fill_from_env(args: argparse.Namespace) -> None:
    """Absent flags take their TASUKI_* environment variable (flags win)."""
    for attr, var in ENV_FLAGS.items():
        if hasattr(args, attr) and getattr(args, attr) in (None, ""):
            value = os.environ.get(var)
            setattr(args, attr, value if value not in (None, "") else None)
            if value and attr != "token":
                args.from_env = getattr(args, "from_env", {}) | {attr: var}


def _number(args, attr: str, kind, low: float, flag: str):
    value = getattr(args, attr)
    if value is None:
        return None
    source = (getattr(args, "from_env", {}).get(attr)) or flag
    try:
        number = kind(value)
    except ValueError:
        raise CliError(f"{source}={value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if number < low:
        raise CliError(f"{source}={value!r} must be {low} or more")
    return number


def parse_bytes(value: str, source: str) -> int:
    """'1073741824', '512M', '2G', '2GiB' -> bytes."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    try:
        number = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise CliError(f"{source}={value!r} is not a size: give bytes, or a number with K, M or G") from None
    if number <= 0:
        raise CliError(f"{source}={value!r} must be more than 0 bytes")
    return int(number)


def node_flags(args) -> list[str]:
    """The resource flags for `python -m tasuki.node`, checked."""
    flags = []
    cpus = _number(args, "num_cpus", float, 0, "--num-cpus")
    if cpus is not None:
        flags += ["--num-cpus", f"{cpus:g}"]
    gpus = _number(args, "num_gpus", int, 0, "--num-gpus")
    if gpus is not None:
        flags += ["--num-gpus", str(gpus)]
    if args.resources is not None:
        source = getattr(args, "from_env", {}).get("resources", "--resources")
        try:
            resources = config.parse_resources(args.resources)
        except ValueError as e:
            raise CliError(f"{source}: {e}") from None
        for reserved, flag in (("CPU", "--num-cpus"), ("GPU", "--num-gpus"), ("memory", "--memory")):
            if reserved in resources:
                raise CliError(f"{source}: use {flag} instead of a {reserved!r} resource")
        flags += ["--resources", json.dumps(resources)]
    if args.memory is not None:
        source = getattr(args, "from_env", {}).get("memory", "--memory")
        flags += ["--memory", str(parse_bytes(args.memory, source))]
    if args.labels is not None:
        from .labels import parse_labels
        source = getattr(args, "from_env", {}).get("labels", "--labels")
        try:
            labels = parse_labels(args.labels)
        except ValueError as e:
            raise CliError(f"{source}={args.labels!r}: {e}") from None
        flags += ["--labels", json.dumps(labels)]
    if args.object_store_memory is not None:
        source = getattr(args, "from_env", {}).get("object_store_memory", "--object-store-memory")
        flags += ["--object-store-memory", str(parse_bytes(args.object_store_memory, source))]
    if args.store_dir is not None:
        flags += ["--store-dir", os.path.abspath(args.store_dir)]
    return flags


def normalize_address(address: str) -> str:
    """'HOST:PORT', 'tcp://HOST:PORT' or 'tasuki://HOST:PORT' (port defaults to 6380) -> 'tcp://HOST:PORT'."""
    host_port = address.strip().split("://", 1)[-1].rstrip("/")
    if not host_port:
        raise CliError(f"the head address {address!r} is empty; give HOST:PORT, e.g. 10.0.0.5:{config.DEFAULT_PORT}")
    if ":" not in host_port:
        host_port += f":{config.DEFAULT_PORT}"
    host, _, port = host_port.rpartition(":")
    if not port.isdigit() or not host:
        raise CliError(f"the head address {address!r} must look like HOST:PORT, e.g. 10.0.0.5:{config.DEFAULT_PORT}")
    return f"tcp://{host}:{port}"


def host_port(address: str) -> str:
    return address.split("://", 1)[-1]


# --- processes ------------------------------------------------------------------------------
def alive(pid: int | None) -> bool:
    """Whether `pid` runs (a zombie does not: an unreaped child of a container's init is dead)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def is_tasuki(pid: int) -> bool:
    """Whether `pid` is a tasuki process of this user's (so a recycled pid is never signalled)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"tasuki" in f.read() and os.fstat(f.fileno()).st_uid == os.getuid()
    except FileNotFoundError:
        return False
    except OSError:
        return True          # no /proc (macOS): trust the cluster file


def log_path(name: str) -> str:
    return os.path.join(config.private_dir(os.path.join(config.session_dir(), "logs")), name)


def spawn(args: list[str], token: str, log: str, lifeline: int | None) -> subprocess.Popen:
    """A detached tasuki process: its own session (and process group), output appended to `log`."""
    env = launcher.python_env(token, lifeline)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args[1:])}\n".encode())
        out.flush()
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=(lifeline,) if lifeline is not None else ())


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    text = text.rsplit("\n--- ", 1)[-1].split("\n", 1)[-1]      # only this start's output
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def died_error(what: str, proc: subprocess.Popen, log: str) -> CliError:
    from .head import describe_exit
    tail = log_tail(log)
    return CliError(f"the {what} exited at start-up ({describe_exit(proc.returncode)}). "
                    f"Its last output ({log}):\n{tail or '    (nothing)'}")


def terminate(pids: list[int], timeout: float, group: bool = True) -> list[int]:
    """SIGTERM each pid, wait up to `timeout`, then SIGKILL what is left. With `group`, each pid leads
    its own session and its process group (the zygote and workers) is killed too. Returns those forced."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    forced = [p for p in pids if alive(p)]
    for pid in pids if group else ():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    for pid in forced:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return forced


def remove_stores(node_pids: list[int]) -> int:
    """Object store files of node agents that are gone (a node killed by SIGKILL leaves its file);
    returns how many were removed."""
    prefixes = tuple(f"tasuki-{pid}-" for pid in node_pids if not alive(pid))
    removed = 0
    if not prefixes:
        return removed
    directory = config.store_dir()
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.startswith(prefixes):
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_uid == os.getuid():     # never another user's file, even as root
                        os.unlink(path)
                        removed += 1
    return removed


def remove_dead_sockets() -> int:
    """IPC socket files in the session directory that nothing listens on any more (their process
    was killed); returns how many were removed."""
    removed = 0
    session = config.session_dir()
    for name in os.listdir(session):
        if not name.endswith(".sock"):
            continue
        path = os.path.join(session, name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass
    return removed


def clean_stale(info: dict) -> str:
    """Clear what a cluster whose head is gone left behind: its node agents (that have not yet
    noticed, see TASUKI_HEAD_RECONNECT_S) with their zygotes and workers, a `--block` command, store
    files and dead IPC sockets. Returns what was done, for the person at the terminal."""
    cli = [p for p in [info.get("cli_pid")] if alive(p) and is_tasuki(p)]
    nodes = [p for p in info.get("node_pids", []) if alive(p) and is_tasuki(p)]
    if cli:             # it stops its own children when we stop it
        terminate(cli, STOP_TIMEOUT_S + 5, group=False)
    terminate([p for p in nodes if alive(p)], STOP_TIMEOUT_S)
    done = [f"stopped {what} (pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))})"
            for what, pids in (("its `tasuki start --block`", cli), ("its node agents", nodes)) if pids]
    stores, sockets = remove_stores(info.get("node_pids", [])), remove_dead_sockets()
    done += [f"removed {n} {what} file{'s' if n > 1 else ''}" for n, what in ((stores, "store"), (sockets, "socket"))
             if n]
    head = info.get("head_pid")
    return (f"the cluster at {host_port(info.get('address', '?'))} recorded in {config.cluster_file()} had stopped"
            + (f" (its head, pid {head}, is gone)" if head else "") + ": " + ", ".join(done + ["removed the file"]))


def check_port(ip: str, port: int, what: str, flag: str) -> None:
    if port_in_use(ip, port):
        raise CliError(f"the {what} port {ip}:{port} is already in use. Is a tasuki head running here "
                       f"(`tasuki status`, `tasuki stop`)? Otherwise pick another with {flag} (0 picks a free one).")


def port_in_use(ip: str, port: int) -> bool:
    if port == 0:
        return False
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # TIME_WAIT is not "in use"
        try:
            s.bind((ip, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            if e.errno == errno.EADDRNOTAVAIL:
                raise CliError(f"{ip} is not an address of this machine; give one of its own addresses with "
                               f"--node-ip-address (or leave it out)") from None
            raise CliError(f"cannot listen on {ip}:{port}: {e}") from None
    return False


# --- the cluster file ---------------------------------------------------------------------------
@contextlib.contextmanager
def cluster_file_lock():
    """Serializes read-modify-write of the cluster file between concurrent `tasuki` commands."""
    fd = os.open(config.cluster_file() + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_cluster_file(info: dict) -> None:
    path = config.cluster_file()
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, path)


def remove_cluster_file() -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.cluster_file())


def live_pids(info: dict) -> list[int]:
    pids = [info.get("cli_pid"), info.get("head_pid"), *info.get("node_pids", [])]
    return [p for p in pids if alive(p) and is_tasuki(p)]


# --- talking to the head ------------------------------------------------------------------------
def connect(address: str, token: str, timeout: float = CONNECT_TIMEOUT_S):
    """A driver connection to the head, or CliError saying why there is none."""
    from .client import Client
    from .exceptions import ClusterError
    client = Client(address, token, "driver")
    try:
        client.wait_welcome(timeout=config.env_float("CONNECT_TIMEOUT", timeout))
    except ClusterError as e:
        client.close()
        raise CliError(f"cannot reach the tasuki head at {host_port(address)}: no answer within "
                       f"{config.env_float('CONNECT_TIMEOUT', timeout):g} s. Check that the head runs "
                       f"(`tasuki status` on its machine), that the address and port are right, and that the "
                       f"token (--token or TASUKI_TOKEN) is the cluster's: a wrong token looks exactly like an "
                       f"unreachable head." if "no answer" in str(e) else str(e)) from None
    except BaseException:
        client.close()
        raise
    return client


def wait_for_node(client, known: set, ip: str, proc: subprocess.Popen, log: str) -> dict:
    """Wait until a node not in `known` with this ip has registered; CliError if the agent dies first."""
    deadline = time.time() + START_TIMEOUT_S
    while True:
        for node in client.query("nodes"):
            if node["node_id"] not in known and node["ip"] == ip and node["state"] == "alive":
                return node
        if proc.poll() is not None:
            raise died_error("node agent", proc, log)
        if time.time() > deadline:
            raise CliError(f"the node agent (pid {proc.pid}) did not register with the head within "
                           f"{START_TIMEOUT_S:g} s; see its log {log}")
        time.sleep(0.1)


# --- start --------------------------------------------------------------------------------------
def start(args) -> int:
    if not args.head and not args.address:
        raise CliError("say which to start: `tasuki start --head` for a new cluster, or "
                       "`tasuki start --address HOST:PORT` to add this machine to one (or set TASUKI_ADDRESS)")
    flags = node_flags(args)                      # check every flag before starting anything
    lifeline = None
    if args.block:
        catch_stop_signals(signal.SIGTERM)      # (Ctrl-C still aborts the start-up)
        read_end, lifeline_w = os.pipe()
        os.set_inheritable(read_end, True)
        lifeline = read_end
    started: list[subprocess.Popen] = []
    try:
        if args.head:
            info = start_head(args, flags, started, lifeline)
        else:
            info = start_node(args, flags, started, lifeline)
    except BaseException:
        for proc in started:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        if lifeline is not None:
            os.close(lifeline)
    if not args.block:
        return 0
    return block(started, info, lifeline_w)


def spawn_head(address: str, metrics_port: str, metrics_host: str, token: str, started: list,
               lifeline: int | None) -> tuple[subprocess.Popen, dict]:
    """Start a head process at `address` and wait for its ready file; returns it and what it wrote
    there (its bound address and metrics URL)."""
    ready = os.path.join(config.session_dir(), f"head-ready-{secrets.token_hex(4)}.json")
    head_log = log_path("head.log")
    head = spawn([sys.executable, "-m", "tasuki.head", "--address", address, "--metrics-port", metrics_port,
                  "--metrics-host", metrics_host, "--ready-file", ready], token, head_log, lifeline)
    started.append(head)
    deadline = time.time() + START_TIMEOUT_S
    while not os.path.exists(ready):
        if head.poll() is not None:
            raise died_error("head", head, head_log)
        if time.time() > deadline:
            raise CliError(f"the head (pid {head.pid}) did not start within {START_TIMEOUT_S:g} s; see {head_log}")
        time.sleep(0.05)
    ready_info = json.loads(config.read_private_file(ready))
    os.unlink(ready)
    return head, ready_info


def restart_head(args, existing: dict, nodes: list[int], started: list, lifeline: int | None) -> dict:
    """The recorded cluster's head is gone and its node agents still run (they keep trying to reach it
    for TASUKI_HEAD_RECONNECT_S): start a head at the same address with the same token; the nodes,
    their workers and actors, and the drivers rejoin it (recovery.py). Called with the cluster file
    locked."""
    address, token = existing["address"], existing["token"]
    metrics = existing.get("metrics")
    metrics_port = metrics.rsplit(":", 1)[1] if metrics else "0"
    metrics_host = args.metrics_host or address.split("://", 1)[1].rsplit(":", 1)[0]
    head, _ = spawn_head(address, metrics_port, metrics_host, token, started, lifeline)
    stores = remove_stores(existing.get("node_pids", []))
    info = {**existing, "head_pid": head.pid, "node_pids": nodes}
    write_cluster_file(info)
    print(f"tasuki: the head of the cluster at {host_port(address)} (pid {existing.get('head_pid')}) was gone and "
          f"its node agents (pid{'s' if len(nodes) > 1 else ''} {', '.join(map(str, nodes))}) still run: restarted "
          f"the head there (pid {head.pid}); nodes, workers, actors and drivers rejoin it"
          + (f"; removed {stores} store file{'s' if stores > 1 else ''} of node agents that died" if stores else "")
          + ".", file=sys.stderr, flush=True)
    return info


def start_head(args, flags: list[str], started: list, lifeline: int | None) -> dict:
    with cluster_file_lock():
        existing = config.read_cluster_file()
        running = live_pids(existing) if existing else []
        if running and existing.get("head_pid") in (None, *running):    # a live head, or nodes of a remote one
            raise CliError(f"a tasuki cluster started on this machine is running ({existing.get('address')}, "
                           f"pids {', '.join(map(str, running))}). Stop it with `tasuki stop`, or set "
                           f"TASUKI_TMPDIR to another directory to run a second one beside it.")
        nodes = [p for p in existing.get("node_pids", []) if p in running] if existing else []
        if nodes and existing.get("head_pid") not in running and not existing.get("cli_pid"):
            return restart_head(args, existing, nodes, started, lifeline)
        if existing:
            print(f"tasuki: {clean_stale(existing)}.", file=sys.stderr, flush=True)
        remove_cluster_file()
    ip = args.node_ip_address or config.node_ip()
    port = _number(args, "port", int, 0, "--port")
    port = config.DEFAULT_PORT if port is None else port
    metrics_port = _number(args, "metrics_port", int, 0, "--metrics-port")
    for value, flag in ((port, "--port"), (metrics_port, "--metrics-port")):
        if value is not None and value > 65535:
            raise CliError(f"{flag} {value} is not a port: give 1-65535, or 0 for a free one")
    check_port(ip, port, "head", "--port")
    metrics_host = args.metrics_host or ip
    if metrics_port is None:
        metrics_port = config.DEFAULT_METRICS_PORT
        if port_in_use(metrics_host, metrics_port):
            print(f"tasuki: port {metrics_port} is taken, so metrics go to a free port (shown below); "
                  f"choose one with --metrics-port", file=sys.stderr)
            metrics_port = 0
    else:
        check_port(metrics_host, metrics_port, "metrics", "--metrics-port")
    token = args.token or secrets.token_hex(16)

    head, ready_info = spawn_head(f"tcp://{ip}:{port}", str(metrics_port), metrics_host, token, started, lifeline)
    address = ready_info["address"]
    metrics = ready_info.get("metrics")
    url_host = ip if metrics_host in ("0.0.0.0", "::") else metrics_host      # a wildcard is no URL
    metrics_url = f"http://{url_host}:{metrics.rsplit(':', 1)[1]}" if metrics else None

    node_log = log_path("node-head.log")
    node = spawn([sys.executable, "-m", "tasuki.node", "--head", address, "--head-node",
                  "--node-ip-address", ip, *flags], token, node_log, lifeline)
    started.append(node)
    client = connect(address, token)
    try:
        registered = wait_for_node(client, set(), ip, node, node_log)
    finally:
        client.close()
    info = {"address": address, "token": token, "head_pid": head.pid, "node_pids": [node.pid],
            "metrics": metrics_url}
    if args.block:
        info["cli_pid"] = os.getpid()
    with cluster_file_lock():
        write_cluster_file(info)

    hp = host_port(address)
    print(f"Started a tasuki head at {address} (head pid {head.pid}; node agent {registered['node_id']}, "
          f"pid {node.pid}, {describe_resources(registered['resources'], registered.get('labels'))}).\n"
          f"Logs: {os.path.dirname(log_path('head.log'))}\n\n"
          f"Connect from Python on this machine:\n"
          f"    tasuki.init(address=\"auto\")\n"
          f"From another machine:\n"
          + (f"    export TASUKI_TOKEN={token}\n" if not args.token else
             "    export TASUKI_TOKEN=...   (the token this head was given; not printed: logs are often more widely "
             "readable than secrets)\n")
          + f"    python -c 'import tasuki; tasuki.init(address=\"{hp}\")'\n"
          f"Add a machine to the cluster (with TASUKI_TOKEN exported there too):\n"
          f"    tasuki start --address {hp}\n"
          + (f"Metrics: {metrics_url}/metrics   state: {metrics_url}/api/v1/status\n" if metrics_url else "")
          + "See it with `tasuki status`; stop it with `tasuki stop`.", flush=True)
    return info


def start_node(args, flags: list[str], started: list, lifeline: int | None) -> dict:
    address = normalize_address(args.address)
    with cluster_file_lock():
        cluster = config.read_cluster_file()
    same = bool(cluster) and host_port(cluster.get("address", "")) == host_port(address)
    token = args.token or (cluster.get("token") if same else None)
    if not token:
        raise CliError(f"no token for the cluster at {host_port(address)}: pass --token or set TASUKI_TOKEN "
                       f"(`tasuki start --head` printed it on the head's machine)")
    ip = args.node_ip_address or config.node_ip()
    client = connect(address, token)
    try:
        known = {n["node_id"] for n in client.query("nodes")}
        node_log = log_path(f"node-{ip}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}.log")
        node = spawn([sys.executable, "-m", "tasuki.node", "--head", address, "--node-ip-address", ip, *flags],
                     token, node_log, lifeline)
        started.append(node)
        registered = wait_for_node(client, known, ip, node, node_log)
    finally:
        client.close()
    with cluster_file_lock():
        cluster = config.read_cluster_file()
        if cluster and host_port(cluster.get("address", "")) == host_port(address):
            cluster["node_pids"] = [*cluster.get("node_pids", []), node.pid]
            info = cluster
            write_cluster_file(cluster)
        elif cluster and live_pids(cluster):
            info = {"address": address, "token": token, "head_pid": None, "node_pids": [node.pid]}
            print(f"tasuki: note: the cluster file {config.cluster_file()} belongs to another cluster "
                  f"({cluster.get('address')}), so `tasuki stop` will not stop this node; stop it with "
                  f"`kill {node.pid}`", file=sys.stderr)
        else:
            info = {"address": address, "token": token, "head_pid": None, "node_pids": [node.pid],
                    "metrics": None}
            write_cluster_file(info)
    print(f"Node {registered['node_id']} (pid {node.pid}, {ip}, "
          f"{describe_resources(registered['resources'], registered.get('labels'))}) "
          f"joined the tasuki cluster at {host_port(address)}.\nLog: {node_log}\n"
          f"Stop the processes started on this machine with `tasuki stop`.", flush=True)
    return info


STOP_SIGNALS: list[str] = []      # the signals a `start --block` got (caught from its start: a pod may be deleted early)


def catch_stop_signals(*signums: int) -> None:
    def on_signal(signum, _frame) -> None:
        STOP_SIGNALS.append(signal.Signals(signum).name)

    for signum in signums:
        signal.signal(signum, on_signal)


def block(started: list[subprocess.Popen], info: dict, lifeline_w: int) -> int:
    """Stay in the foreground until SIGTERM/SIGINT or until a child dies; then stop them all."""
    catch_stop_signals(signal.SIGTERM, signal.SIGINT)
    stop_reason = STOP_SIGNALS
    died = None
    while not stop_reason and died is None:
        died = next((p for p in started if p.poll() is not None), None)
        time.sleep(0.2)
    if died is None:
        leave(started, info)
    os.close(lifeline_w)                       # the children see EOF on their lifeline and stop
    terminate([p.pid for p in started if p.poll() is None], STOP_TIMEOUT_S)
    for proc in started:
        proc.wait()
    remove_stores([p.pid for p in started])
    with cluster_file_lock():           # forget our processes; keep the file while others it names run
        current = config.read_cluster_file()
        if current and host_port(current.get("address", "")) == host_port(info["address"]):
            ours = {p.pid for p in started} | {os.getpid()}
            current["node_pids"] = [p for p in current.get("node_pids", []) if p not in ours]
            current.update({k: None for k in ("head_pid", "cli_pid") if current.get(k) in ours})
            write_cluster_file(current) if live_pids(current) else remove_cluster_file()
    if died is not None:
        from .head import describe_exit
        print(f"tasuki: process {died.pid} ({' '.join(died.args[1:3])}) ended: {describe_exit(died.returncode)}; "
              f"stopped the rest", file=sys.stderr)
        return 1
    print(f"tasuki: stopped on {stop_reason[0]}")
    return 0


def leave(started: list[subprocess.Popen], info: dict) -> None:
    """Stopped by a signal: stop the children gracefully before the lifeline goes. A head is sent
    SIGTERM (it tells its nodes and drivers, see head.shutdown); a node agent alone is sent SIGTERM
    and given its drain (TASUKI_DRAIN_TIMEOUT_S + the margin, see node.leave) to hand its work over."""
    head = [p for p in started if p.pid == info.get("head_pid")]
    leaving = head or started
    for proc in leaving:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
    wait_s = STOP_TIMEOUT_S if head else (config.env_float("DRAIN_TIMEOUT_S", config.DRAIN_TIMEOUT_S)
                                          + config.DRAIN_MARGIN_S + 5)
    deadline = time.time() + wait_s
    while time.time() < deadline and any(p.poll() is None for p in leaving):
        time.sleep(0.1)
    if not head:
        from .head import describe_exit
        for proc in started:
            drained = "drained and exited" if proc.returncode == 0 else (
                describe_exit(proc.returncode) if proc.returncode is not None else f"still running after {wait_s:g} s")
            print(f"tasuki: node agent (pid {proc.pid}): {drained}", flush=True)


def describe_resources(resources: dict, labels: dict | None = None) -> str:
    """'1.5 CPU, 2 GiB memory; labels zone=a' for the line `tasuki start` prints."""
    from .scheduler import format_amount
    text = ", ".join(f"{format_amount(k, v)} {k}" for k, v in resources.items()) or "no resources"
    return text + (f"; labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}" if labels else "")


# --- stop ---------------------------------------------------------------------------------------
def stop(args) -> int:
    path = config.cluster_file()
    with cluster_file_lock():
        info = config.read_cluster_file()
    if info is None:
        print(f"No tasuki cluster was started on this machine (no {path}); nothing to stop.")
        return 0
    cli = [p for p in [info.get("cli_pid")] if alive(p) and is_tasuki(p)]
    head = [p for p in [info.get("head_pid")] if alive(p) and is_tasuki(p)]
    nodes = [p for p in info.get("node_pids", []) if alive(p) and is_tasuki(p)]
    forced = []
    if cli:            # a `tasuki start --block` stops its own children and removes the file
        forced += terminate(cli, args.timeout + 5, group=False)
    # node agents drain on SIGTERM (node.leave): alone (their head runs elsewhere) they get the drain's time
    timeout = args.timeout if head else max(args.timeout, config.env_float("DRAIN_TIMEOUT_S", config.DRAIN_TIMEOUT_S)
                                            + config.DRAIN_MARGIN_S + 5)
    forced += terminate([p for p in head + nodes if alive(p)], timeout)
    remove_stores(info.get("node_pids", []))
    with cluster_file_lock():
        if config.read_cluster_file() == info:
            remove_cluster_file()
    if not head and not nodes and not cli:
        print(f"The tasuki cluster at {host_port(info.get('address', '?'))} was no longer running; "
              f"removed {path}.")
        return 0
    parts = []
    if head:
        parts.append(f"the head (pid {head[0]})")
    if nodes:
        parts.append(f"{len(nodes)} node agent{'s' if len(nodes) > 1 else ''} (pid{'s' if len(nodes) > 1 else ''} "
                     f"{', '.join(map(str, nodes))})")
    if cli:
        parts.append(f"the foreground `tasuki start` (pid {cli[0]})")
    print(f"Stopped {', '.join(parts[:-1]) + ' and ' if len(parts) > 1 else ''}{parts[-1]} of the cluster at {host_port(info.get('address', '?'))}."
          + (f" Killed with SIGKILL after {timeout:g} s: pids {', '.join(map(str, forced))}." if forced else ""))
    return 0


# --- status -------------------------------------------------------------------------------------
def status(args) -> int:
    cluster = config.read_cluster_file()
    if args.address:
        address = normalize_address(args.address)
    elif cluster and cluster.get("address"):
        address = cluster["address"]
    else:
        raise CliError(f"no tasuki cluster was started on this machine (no {config.cluster_file()}). Start one with "
                       f"`tasuki start --head`, or name a running one with --address HOST:PORT (or TASUKI_ADDRESS).")
    same = bool(cluster) and host_port(cluster.get("address", "")) == host_port(address)
    token = args.token or (cluster.get("token") if same else None)
    if not token:
        raise CliError(f"no token for the cluster at {host_port(address)}: pass --token or set TASUKI_TOKEN")
    client = connect(address, token, timeout=5.0)
    try:
        state = client.query("status")
        demand = client.query("demand")
    finally:
        client.close()
    print(format_status(state, demand))
    return 0


def format_status(state: dict, demand: dict) -> str:
    """The `tasuki status` text from the head's status and demand answers (pure)."""
    from .labels import parse_selector
    from .scheduler import format_key, format_shape, shape_of
    lines = [f"tasuki {state['version']} cluster at {host_port(state['address'])}, up {state['uptime_s']:g} s, "
             f"{max(0, state['drivers'] - 1)} driver(s) connected", ""]
    rows = [("NODE", "NAME", "GROUP", "IP", "STATE", "CPU", "GPU", "MEMORY GiB", "CUSTOM", "WORKERS", "STORE MiB",
             "IDLE s")]
    labelled = []
    for n in state["nodes"]:
        total, free = n["resources"], n["available"]

        def used(k: str, scale: float = 1.0) -> str:
            if k not in total:
                return "-"
            return f"{max(0.0, total[k] - free.get(k, 0.0)) / scale:.4g}/{total[k] / scale:.4g}"
        custom = " ".join(f"{k} {used(k)}" for k in sorted(total) if k not in ("CPU", "GPU", "memory")) or "-"
        store = n["object_store"]
        if n.get("labels"):
            labelled.append(f"  {n['node_id']}: " + ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())))
        rows.append((n["node_id"] + (" (head)" if n.get("is_head_node") else ""), n.get("node_name") or "-",
                     n.get("group") or "-", n["ip"], n["state"],
                     used("CPU"), used("GPU"), used("memory", 1 << 30), custom,
                     f"{n['busy_workers']}/{n['workers']}" if n["state"] != "dead" else "-",
                     f"{store['used'] / MIB:.1f}/{store['capacity'] / MIB:.0f}" if n["state"] != "dead" else "-",
                     f"{n['seconds_idle']:.0f}" if n["state"] != "dead" else "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if labelled:
        lines += ["", "Node labels:", *labelled]

    def key(entry: dict) -> str:
        return format_key((shape_of(entry["shape"]), parse_selector(entry.get("label_selector"))))
    feasible = {key(p): p["feasible"] for p in demand.get("pending", [])}
    lines += ["", f"Pending tasks: {state['pending']}"]
    for entry in state["pending_by_shape"]:
        shape = key(entry)
        note = "" if feasible.get(shape, True) else "   (no node can fit this shape)"
        lines.append(f"  {entry['count']:>6}  {shape}{note}")
    requested = demand.get("requested") or []
    if requested:
        lines += ["", "Requested resources (tasuki.autoscaler.request_resources):"]
        lines += [f"  {r['count']:>6}  {format_shape(shape_of(r['shape']))}" for r in requested]
    if demand.get("waiting_for_dependencies"):
        lines.append(f"Waiting for arguments: {demand['waiting_for_dependencies']}")
    finished = state["finished"]
    lines += [f"Running tasks: {state['running']}",
              "Finished tasks: " + ", ".join(f"{k} {finished.get(k, 0)}"
                                            for k in ("succeeded", "failed", "crashed", "cancelled")),
              f"Objects: {state['objects']}"]
    actors = state.get("actors") or []
    if actors:
        rows = [("ACTOR", "CLASS", "NAME", "NODE", "STATE", "RESTARTS")]
        rows += [(a["actor_id"][:12], a["class_name"], f"{a['namespace']}/{a['name']}" if a["name"] else "-",
                  a["node_id"] or "-", a["state"], str(a["restarts"])) for a in actors]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["", f"Actors: {sum(a['state'] != 'DEAD' for a in actors)} live, "
                      f"{sum(a['state'] == 'DEAD' for a in actors)} dead"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fill_from_env(args)
    try:
        if args.command == "start":
            return start(args)
        if args.command == "stop":
            return stop(args)
        if args.command == "job":
            from . import job_cli
            return job_cli.run(args)
        return status(args)
    except (CliError, config.UnsafePathError) as e:
        print(f"tasuki {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tasuki {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:            # `tasuki status | head`: the reader left; not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
