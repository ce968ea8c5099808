"""The object store when its directory runs out of room, and the store directory setting.

A store file is mapped by every process on the node; on a full tmpfs the process that touches an
unbacked page dies with SIGBUS (returncode -7) and no message. These tests run a driver in its own
mount namespace (`unshare -m`) on a small tmpfs mounted over /dev/shm, as in a Docker container
with the default --shm-size=64m, and check that a put that does not fit spills (to a file of its
own on disk when /dev/shm cannot hold it at all), and that nothing dies of SIGBUS. The error that
names the directory and the fix when the disk is full too is tested in test_object_store.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tasuki
from conftest import CliCluster, embedded_cluster, wait_until

MB = 1 << 20
SIGBUS_EXIT = -signal.SIGBUS

needs_root_and_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a small tmpfs on /dev/shm in a private mount namespace needs root and unshare(1)")


def run_on_small_shm(tmp_path, driver: str, *, shm_size: str = "64m", prefill_mb: int = 0,
                     timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `driver` (Python source) in a new mount namespace whose /dev/shm is a `shm_size` tmpfs
    with `prefill_mb` MiB already taken by another file; no process or mount outlives it."""
    cluster = CliCluster(tmp_path / "session")          # only for its environment and its clean-up
    os.makedirs(cluster.tmpdir, exist_ok=True)
    (tmp_path / "driver.py").write_text(PUT_READ_BACK_SPILL_OVERFLOW + textwrap.dedent(driver))
    shell = (f"mount -t tmpfs -o size={shm_size} tmpfs /dev/shm && "
             f"{'head -c %dM /dev/zero > /dev/shm/other-program && ' % prefill_mb if prefill_mb else ''}"
             f"exec {sys.executable} {tmp_path / 'driver.py'}")
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", shell], env=cluster.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=tmp_path)
    finally:
        cluster.stop()


# What both full-directory scenarios do once /dev/shm is short: store `count` arrays (some must
# spill), read each back intact, wait for the node to report the spill, then put `overflow` bytes,
# which cannot fit in /dev/shm at all: it goes to a file in the spill directory, on disk, and reads
# back from there. Prints READ BACK, SPILLED <bytes> and ON DISK <bytes> <first> <last> (or ERROR
# <message>, should the disk be full too).
PUT_READ_BACK_SPILL_OVERFLOW = """
def put_read_back_spill_overflow(count, size, overflow):
    import time, numpy as np, tasuki
    from tasuki.exceptions import ObjectStoreFullError
    refs = [tasuki.put(np.full(size, i, dtype=np.uint8)) for i in range(count)]
    for i, ref in enumerate(refs):
        value = tasuki.get(ref)
        assert value.nbytes == size and (value == i).all()
        del value
    print("READ BACK", flush=True)
    deadline = time.time() + 30
    while not tasuki.nodes()[0]["ObjectStore"]["spilled"] and time.time() < deadline:
        time.sleep(0.02)                            # the node reports it with its next heartbeat
    print("SPILLED", tasuki.nodes()[0]["ObjectStore"]["spilled"], flush=True)
    try:
        big = tasuki.get(tasuki.put(np.full(overflow, 7, dtype=np.uint8)))
        print("ON DISK", big.nbytes, big[0], big[-1], flush=True)
        del big
    except ObjectStoreFullError as e:
        print("ERROR", e, flush=True)
"""


def explain(out: subprocess.CompletedProcess) -> str:
    return f"returncode {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"


@needs_root_and_unshare
def test_puts_beyond_a_full_dev_shm_spill_or_fail_clearly_instead_of_sigbus(tmp_path):
    out = run_on_small_shm(tmp_path, prefill_mb=50, driver="""
        import numpy as np, tasuki
        tasuki.init(num_cpus=1)                         # the default store size: 64 MB, /dev/shm has 14 MB left
        put_read_back_spill_overflow(count=5, size=6 << 20, overflow=40 << 20)       # 30 MB, then 40 MB
        assert tasuki.get(tasuki.put(np.ones(MB := 1 << 20))).sum() == MB      # the store still works
        print("DONE", flush=True)
    """)
    assert out.returncode != SIGBUS_EXIT, "the driver died of SIGBUS\n" + explain(out)
    assert out.returncode == 0 and "DONE" in out.stdout, explain(out)
    assert "READ BACK" in out.stdout and "SPILLED 0" not in out.stdout, explain(out)     # spilled, came back
    assert f"ON DISK {40 << 20} 7 7" in out.stdout, explain(out)      # before: ObjectStoreFullError


@needs_root_and_unshare
def test_a_dev_shm_without_room_for_a_small_store_is_refused_at_init(tmp_path):
    out = run_on_small_shm(tmp_path, shm_size="8m", prefill_mb=7, driver="""
        import numpy as np, tasuki
        try:
            tasuki.init(num_cpus=1)
        except RuntimeError as e:
            print("REFUSED", e, flush=True)
        else:
            tasuki.put(np.ones(4 << 20, dtype=np.uint8))
            print("PUT", flush=True)
    """)
    assert out.returncode != SIGBUS_EXIT, "the driver died of SIGBUS\n" + explain(out)
    assert out.returncode == 0 and "REFUSED" in out.stdout, explain(out)
    assert "the object store's first 4 MiB cannot be stored: /dev/shm is full (1 MiB free of 8 MiB)" in out.stderr
    assert "--shm-size=" in out.stderr and "TASUKI_STORE_DIR" in out.stderr and "Traceback" not in out.stderr


@needs_root_and_unshare
def test_dev_shm_filled_by_another_process_while_the_cluster_runs(tmp_path):
    # A 100 MB put makes the store hold 100 MB (and reserve up to 256 MB more in the background);
    # then another program takes the rest of /dev/shm, so the 900 MB store cannot grow much further.
    out = run_on_small_shm(tmp_path, shm_size="1g", driver="""
        import subprocess, numpy as np, tasuki
        tasuki.init(num_cpus=1, object_store_memory=900 << 20)
        ref = tasuki.put(np.zeros(100 << 20, dtype=np.uint8))
        del ref
        filler = subprocess.run(["sh", "-c", "cat /dev/zero > /dev/shm/other-program"], capture_output=True, text=True)
        print("FILLER", filler.returncode, filler.stderr.strip(), flush=True)
        put_read_back_spill_overflow(count=4, size=100 << 20, overflow=600 << 20)
        print("DONE", flush=True)
    """)
    assert out.returncode != SIGBUS_EXIT, "the driver died of SIGBUS\n" + explain(out)
    assert out.returncode == 0 and "DONE" in out.stdout, explain(out)
    assert "FILLER 1" in out.stdout and "No space left on device" in out.stdout, explain(out)
    assert "READ BACK" in out.stdout and "SPILLED 0" not in out.stdout, explain(out)
    assert f"ON DISK {600 << 20} 7 7" in out.stdout, explain(out)


def test_the_store_directory_is_settable(tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    monkeypatch.setenv("TASUKI_TMPDIR", str(tmp_path))
    monkeypatch.setenv("TASUKI_STORE_DIR", str(store_dir))
    with embedded_cluster(num_cpus=1, object_store_memory=64 * MB):
        node = tasuki.api._get_client().nodes()[0]
        assert os.path.dirname(node["store_path"]) == str(store_dir)
        assert os.listdir(store_dir) == [os.path.basename(node["store_path"])]
        array = np.arange(5 * MB, dtype=np.int64)               # 2 x 40 MB into a 64 MB store: spills too
        refs = [tasuki.put(array + i) for i in range(2)]
        for i, ref in enumerate(refs):
            assert (tasuki.get(ref) == array + i).all()
        del refs
    wait_until(lambda: not os.listdir(store_dir), what="the node to remove its store file")


def test_tasuki_start_takes_a_store_dir(tmp_path, monkeypatch):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    cluster = CliCluster(tmp_path / "session")
    os.makedirs(cluster.tmpdir)
    monkeypatch.setenv("TASUKI_TMPDIR", cluster.tmpdir)
    try:
        cluster.start_head("--num-cpus", "1", "--store-dir", str(store_dir))
        tasuki.shutdown()
        tasuki.init(address="auto")
        path = tasuki.api._get_client().nodes()[0]["store_path"]
        assert os.path.dirname(path) == str(store_dir) and os.path.exists(path)
        array = np.arange(MB, dtype=np.float64)
        assert (tasuki.get(tasuki.put(array)) == array).all()
        tasuki.shutdown()
        assert "Stopped the head" in cluster.cli("stop").stdout
        assert not os.path.exists(path)
    finally:
        tasuki.shutdown()
        cluster.stop()
