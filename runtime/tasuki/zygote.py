"""The zygote: a small fork server the node agent starts before it opens any socket or thread.

Forking a fresh worker from a process that has already imported NumPy, zmq and cloudpickle
takes milliseconds, where starting a Python interpreter takes ~130 ms of CPU. The zygote has no
zmq context and no threads, so forking it is safe. It reaps its children and reports each exit
status, which gives exact crash messages (exit code, or the signal such as SIGKILL(-9)).

Node agent ↔ zygote, one JSON object per line over a socketpair:
  → {"spawn": worker_id_hex}            ← {"started": worker_id_hex, "pid": N}
                                        ← {"exited": pid, "code": C}   (negative C: killed by signal -C)
When the node agent's end closes, the zygote kills every worker and exits.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def start(run_worker) -> tuple[socket.socket, int]:
    """Fork the zygote; `run_worker(worker_id: bytes)` runs in each forked worker. Returns (socket, pid)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid:
        theirs.close()
        return ours, pid
    ours.close()
    try:
        _serve(theirs, run_worker)
    finally:
        os._exit(0)


def _serve(sock: socket.socket, run_worker) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    buffer = b""
    out = sock.makefile("wb", buffering=0)

    def report(message: dict) -> None:
        out.write(json.dumps(message).encode() + b"\n")

    while True:
        readable, _, _ = select.select([sock, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            report({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
        if sock in readable:
            chunk = sock.recv(65536)
            if not chunk:
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                worker_id = json.loads(line)["spawn"]
                zygote_pid = os.getpid()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    os.close(wake_r)
                    os.close(wake_w)
                    sock.close()
                    die_with_parent()
                    if os.getppid() != zygote_pid:     # the zygote died before we asked to die with it
                        os._exit(0)
                    code = 0
                    try:
                        run_worker(bytes.fromhex(worker_id))
                    except SystemExit as e:
                        code = e.code if isinstance(e.code, int) else 0
                    except BaseException:
                        import traceback
                        traceback.print_exc()
                        code = 1
                    finally:
                        os._exit(code)
                children.add(pid)
                report({"started": worker_id, "pid": pid})
