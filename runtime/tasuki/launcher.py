"""Starting head and node agent processes: for `init()` (embedded cluster) and for `tasuki start`.

The embedded cluster's processes hold the read end of a "lifeline" pipe whose write end only the
driver has: when the driver exits, however it exits (even SIGKILL), the kernel closes the pipe,
the head and node see EOF and shut down, the zygote kills the workers, and the node removes its
store file. No orphan processes, no leftover shared memory.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

from . import config


def python_env(token: str, lifeline_fd: int | None = None) -> dict:
    env = dict(os.environ)
    env["TASUKI_TOKEN"] = token
    # the children must import this very tasuki, wherever it was imported from
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    if lifeline_fd is not None:
        env["TASUKI_LIFELINE_FD"] = str(lifeline_fd)
    return env


class EmbeddedCluster:
    """A head and one node agent on this machine, tied to this process's life."""

    def __init__(self, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None) -> None:
        self.token = secrets.token_hex(16)
        session = config.session_dir()
        self.address = f"ipc://{session}/head-{os.getpid()}-{secrets.token_hex(4)}.sock"
        # a second driver on this machine may join with init(address=<this address>): it reads the
        # token beside the socket, in the user's private session directory
        self.token_file = self.address[len("ipc://"):] + ".token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        read_end, self.lifeline = os.pipe()
        os.set_inheritable(read_end, True)
        env = python_env(self.token, read_end)
        common = dict(env=env, pass_fds=(read_end,), stdin=subprocess.DEVNULL, start_new_session=True)
        self.head = subprocess.Popen([sys.executable, "-m", "tasuki.head", "--address", self.address], **common)
        node_args = [sys.executable, "-m", "tasuki.node", "--head", self.address, "--head-node", "--local-only",
                     "--node-ip-address", "127.0.0.1"]
        if num_cpus is not None:
            node_args += ["--num-cpus", str(num_cpus)]
        if num_gpus is not None:
            node_args += ["--num-gpus", str(num_gpus)]
        if resources:
            import json
            node_args += ["--resources", json.dumps(resources)]
        if object_store_memory is not None:
            node_args += ["--object-store-memory", str(int(object_store_memory))]
        self.node = subprocess.Popen(node_args, **common)
        os.close(read_end)

    def check(self) -> None:
        """Raise if a process died at start-up (a bad flag, no room in /dev/shm)."""
        for name, proc in (("head", self.head), ("node agent", self.node)):
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the embedded tasuki {name} exited at start-up with code {proc.returncode} "
                                   f"(its error is printed above)")

    def stop(self, timeout: float = 5.0) -> None:
        for close in (lambda: os.close(self.lifeline), lambda: os.unlink(self.token_file)):
            try:
                close()
            except OSError:
                pass
        deadline = time.time() + timeout
        for proc in (self.node, self.head):
            try:
                proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
