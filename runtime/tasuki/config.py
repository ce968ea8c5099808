"""Settings: defaults, units, and the TASUKI_* environment variables that override them.

Every process reads its configuration here, so a pod spec can set any knob with an environment
variable (the operator relies on this). Command-line flags and `init()` arguments win over the
environment, which wins over the defaults below.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import stat

DEFAULT_PORT = 6380
DEFAULT_METRICS_PORT = 8080
INLINE_OBJECT_LIMIT = 100 * 1024          # bytes: larger objects go to the shared-memory store
NODE_HEARTBEAT_S = 0.5                    # seconds between node heartbeats
NODE_TIMEOUT_S = 6.0                      # seconds without a heartbeat before a node is dead
DRIVER_TIMEOUT_S = 30.0                   # seconds without a heartbeat before a driver is gone
EARLY_GET_WAIT_S = 10.0                   # seconds a GET of a not-yet-known object waits for it
HEAD_RECONNECT_S = 60.0                   # seconds drivers, workers and nodes keep trying to reach a head that went
                                          # away (TASUKI_HEAD_RECONNECT_S) before they give up (see recovery.py)
DRAIN_TIMEOUT_S = 30.0                    # seconds a node agent given SIGTERM lets its running tasks finish (drain.py)
DRAIN_MARGIN_S = 5.0                      # then seconds more for the last object copies before it exits anyway
SHM_DIR = "/dev/shm"                      # the object store's directory unless TASUKI_STORE_DIR / --store-dir say otherwise
STORE_FRACTION = 0.3                      # default store size: this share of physical memory
TRANSFER_CHUNK = 8 * 1024 * 1024          # bytes per chunk when objects cross nodes
GC_STORE_FRACTION = 0.7                   # a node's store this full: every worker and driver runs gc.collect() (Ray's
GC_MIN_INTERVAL_S = 30.0                  # high_plasma_storage_usage), at most once per this many seconds (Ray's too)
LINEAGE_MAX_BYTES = 256 << 20             # bytes of finished tasks' specs the head keeps to recompute lost objects
                                          # (lineage.py; Ray's max_lineage_bytes); TASUKI_LINEAGE_MAX_BYTES overrides


def env(name: str, default=None):
    """The value of TASUKI_<NAME>, or `default`."""
    return os.environ.get("TASUKI_" + name.upper(), default)


def env_float(name: str, default: float) -> float:
    value = env(name)
    return float(value) if value not in (None, "") else default


class UnsafePathError(PermissionError):
    """A directory or file the runtime would trust could have been changed by another user."""


def _user(uid: int) -> str:
    import pwd
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _problems(st: os.stat_result, kind: str) -> list[str]:
    """What makes a file or directory with this lstat/fstat unsafe to trust (empty: nothing)."""
    if stat.S_ISLNK(st.st_mode):
        return ["is a symbolic link"]
    if (kind == "directory" and not stat.S_ISDIR(st.st_mode)) or (kind == "file" and not stat.S_ISREG(st.st_mode)):
        return [f"is not a {kind}"]
    problems = []
    if st.st_uid != os.getuid():
        problems.append(f"is owned by {_user(st.st_uid)}, not by you, {_user(os.getuid())}")
    if st.st_mode & 0o022:
        problems.append(f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")
    return problems


def _refuse(what: str, path: str, problems: list[str], fix: str) -> UnsafePathError:
    return UnsafePathError(f"tasuki will not use the {what} {path}: it {' and '.join(problems)}, so another user "
                           f"could have planted its contents (a cluster address and token, sockets). {fix}")


def private_dir(path: str, create: bool = True) -> str:
    """`path` made (mode 0700) or checked to be a directory only this user can change: not a symlink,
    owned by this user, not writable by group or others, and inside directories that only this user
    or root can change (or sticky ones, like /tmp). Readable-only by others, it is tightened to 0700
    (our IPC sockets rely on it). Returns `path`; raises UnsafePathError saying what is wrong."""
    if create:
        with contextlib.suppress(FileExistsError):      # a file or a dangling symlink: refused below
            os.makedirs(path, mode=0o700, exist_ok=True)
    fix = "Remove it (after checking what is in it), or set TASUKI_TMPDIR to a directory of your own (mode 0700)."
    st = os.lstat(path)
    problems = _problems(st, "directory")
    if problems:
        if stat.S_ISLNK(st.st_mode):
            problems = [f"is a symbolic link (to {os.readlink(path)})"]
        raise _refuse("directory", path, problems, fix)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    parent = os.path.dirname(os.path.realpath(path))
    while True:              # an ancestor that others can write lets them swap `path` for their own
        st = os.stat(parent)
        if st.st_uid not in (0, os.getuid()):
            problem = f"is owned by {_user(st.st_uid)}"
        elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            problem = f"others can write without the sticky bit (mode {stat.S_IMODE(st.st_mode):04o})"
        else:
            problem = None
        if problem:
            raise _refuse("directory", path, [f"lies inside {parent}, which {problem}"],
                          "Set TASUKI_TMPDIR to a directory of your own (mode 0700).")
        if parent == os.path.dirname(parent):
            return path
        parent = os.path.dirname(parent)


def read_private_file(path: str) -> str | None:
    """The text of `path`, a regular file of this user's that others cannot write (opened without
    following a symlink), or None if there is none; raises UnsafePathError otherwise."""
    fix = "Remove it (after checking what is in it); `tasuki start --head` writes a new one."
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        if os.path.islink(path):           # O_NOFOLLOW on a symlink: ELOOP
            raise _refuse("file", path, [f"is a symbolic link (to {os.readlink(path)})"], fix) from None
        raise
    with os.fdopen(fd) as f:
        problems = _problems(os.fstat(f.fileno()), "file")
        if problems:
            raise _refuse("file", path, problems, fix)
        return f.read()


def store_dir() -> str:
    """The directory of the nodes' object store files: TASUKI_STORE_DIR, else /dev/shm."""
    return env("STORE_DIR") or SHM_DIR


def session_dir() -> str:
    """Where this machine keeps cluster files (address, token) and IPC sockets; private to the user
    (checked on every call: see private_dir)."""
    return private_dir(env("TMPDIR", os.path.join("/tmp", f"tasuki-{os.getuid()}")))


def cluster_file() -> str:
    """The file `tasuki start --head` writes so that `init(address="auto")` and `tasuki stop` find it."""
    return os.path.join(session_dir(), "cluster.json")


def read_cluster_file() -> dict | None:
    """The cluster file's contents, None if there is none or it is not JSON; UnsafePathError if it or
    its directory could have been written by another user."""
    text = read_private_file(cluster_file())
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def node_ip() -> str:
    """This machine's address as other machines see it (TASUKI_NODE_IP_ADDRESS overrides)."""
    explicit = env("NODE_IP_ADDRESS")
    if explicit:
        return explicit
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))   # no packet is sent: this only picks a route
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def boot_id() -> str:
    """Identifies this machine (and its /dev/shm): two processes share memory when these match."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text.isdigit() else None       # "max": no limit
    except OSError:
        return None


def available_memory() -> int:
    """Bytes of memory available to this process now: MemAvailable, or less in a container whose
    cgroup (v2, else v1) limits memory: its limit less its usage."""
    available = total_memory()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < total_memory():
            return max(0, min(available, limit - usage))
    return available


def parse_resources(value) -> dict[str, float]:
    """Custom resources from a dict or a JSON string, checked to be non-negative numbers."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"resources must be a JSON object such as '{{\"ssd\": 1}}', got {value!r}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"resources must be a mapping of name to amount, got {value!r}")
    out = {}
    for name, amount in value.items():
        if not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"resource {name!r} must be a non-negative number, got {amount!r}")
        out[str(name)] = float(amount)
    return out


# The thread-pool sizes of OpenMP and the BLAS libraries. Unless the user set them, a node's workers
# start with 1 (set before the zygote imports NumPy, whose BLAS reads them once when it loads) and
# each task gets its num_cpus (Ray's rule: floor(num_cpus), at least 1), so 16 one-CPU tasks running
# NumPy on a 16-core machine use 16 threads, not 256.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


def default_thread_variables(environ) -> None:
    """Set the thread variables the user left unset to 1, and record which ones (the workers change
    only those, per task, in TASUKI_THREAD_VARIABLES)."""
    ours = [name for name in THREAD_VARIABLES if name not in environ]
    for name in ours:
        environ[name] = "1"
    environ["TASUKI_THREAD_VARIABLES"] = ",".join(ours)
