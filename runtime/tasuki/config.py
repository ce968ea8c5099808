"""Settings: defaults, units, and the TASUKI_* environment variables that override them.

Every process reads its configuration here, so a pod spec can set any knob with an environment
variable (the operator relies on this). Command-line flags and `init()` arguments win over the
environment, which wins over the defaults below.
"""
from __future__ import annotations

import json
import os
import socket

DEFAULT_PORT = 6380
DEFAULT_METRICS_PORT = 8080
INLINE_OBJECT_LIMIT = 100 * 1024          # bytes: larger objects go to the shared-memory store
NODE_HEARTBEAT_S = 0.5                    # seconds between node heartbeats
NODE_TIMEOUT_S = 6.0                      # seconds without a heartbeat before a node is dead
DRIVER_TIMEOUT_S = 30.0                   # seconds without a heartbeat before a driver is gone
EARLY_GET_WAIT_S = 10.0                   # seconds a GET of a not-yet-known object waits for it
HEAD_TIMEOUT_S = 30.0                     # seconds without a word from the head before a driver gives up
SHM_DIR = "/dev/shm"                      # the object store's directory unless TASUKI_STORE_DIR / --store-dir say otherwise
STORE_FRACTION = 0.3                      # default store size: this share of physical memory
TRANSFER_CHUNK = 8 * 1024 * 1024          # bytes per chunk when objects cross nodes


def env(name: str, default=None):
    """The value of TASUKI_<NAME>, or `default`."""
    return os.environ.get("TASUKI_" + name.upper(), default)


def env_float(name: str, default: float) -> float:
    value = env(name)
    return float(value) if value not in (None, "") else default


def store_dir() -> str:
    """The directory of the nodes' object store files: TASUKI_STORE_DIR, else /dev/shm."""
    return env("STORE_DIR") or SHM_DIR


def session_dir() -> str:
    """Where this machine keeps cluster files (address, token) and IPC sockets; private to the user."""
    path = env("TMPDIR", os.path.join("/tmp", f"tasuki-{os.getuid()}"))
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def cluster_file() -> str:
    """The file `tasuki start --head` writes so that `init(address="auto")` and `tasuki stop` find it."""
    return os.path.join(session_dir(), "cluster.json")


def read_cluster_file() -> dict | None:
    try:
        with open(cluster_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
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
