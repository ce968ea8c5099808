"""Ray compatibility, issue 15, second round: a put larger than the object store goes to disk
(item 7); the driver script's directory on the workers' sys.path and GPU workers' environment
(item 8); `tasuki.util.multiprocessing.Pool` as Ray's (item 12)."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tasuki
from conftest import RUNTIME, CliCluster, embedded_cluster, wait_until

MB = 1 << 20


# --- item 7: a put larger than the store spills -------------------------------------------------
def spilled() -> int:
    return tasuki.nodes()[0]["ObjectStore"]["spilled"]


def test_objects_larger_than_the_store_are_readable_everywhere_on_the_node():
    with embedded_cluster(num_cpus=1, object_store_memory=32 * MB):
        big = np.arange(48 * MB, dtype=np.uint8)
        ref = tasuki.put(big)                             # before: ObjectStoreFullError
        wait_until(lambda: spilled() >= 48 * MB, what="the object in a spill file")
        assert (tasuki.get(ref) == big).all()

        @tasuki.remote
        def checksum(a):
            return int(a[::4096].sum()), a.nbytes

        @tasuki.remote
        def make(n):
            return np.full(n, 3, dtype=np.uint8)

        assert tasuki.get(checksum.remote(ref)) == (int(big[::4096].sum()), 48 * MB)   # a worker maps it
        out = make.remote(40 * MB)                        # a task's result larger than the store
        value = tasuki.get(out)
        assert value.nbytes == 40 * MB and value[0] == 3 and value[-1] == 3
        assert tasuki.get(checksum.remote(out)) == (3 * (40 * MB // 4096), 40 * MB)
        del value, out, ref
        gc.collect()
        wait_until(lambda: spilled() == 0, what="the spill files removed once the refs are gone")


def test_objects_larger_than_the_store_travel_between_nodes(tmp_path):
    cluster = CliCluster(tmp_path)
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("TASUKI_")]}
    os.environ["TASUKI_TMPDIR"] = cluster.tmpdir
    try:
        cluster.start_head("--num-cpus", "1", "--object-store-memory", "32M")
        cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"far": 1}', "--object-store-memory", "32M")
        tasuki.shutdown()
        tasuki.init(address=cluster.host_port)

        @tasuki.remote(resources={"far": 1})
        def far(a):                                       # pulls 40 MB into its node's spill file
            return int(a[::4096].sum()), np.full(36 * MB, 5, dtype=np.uint8)

        big = np.arange(40 * MB, dtype=np.uint8)
        total, back = tasuki.get(far.remote(tasuki.put(big)))   # and its result comes back the same way
        assert total == int(big[::4096].sum())
        assert back.nbytes == 36 * MB and back[0] == 5 and back[-1] == 5
    finally:
        tasuki.shutdown()
        cluster.stop()
        os.environ.pop("TASUKI_TMPDIR", None)
        os.environ.update(saved)


# --- item 8: the driver script's directory on the workers' sys.path ------------------------------
def test_a_module_beside_the_driver_script_imports_inside_tasks(tmp_path):
    app, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    app.mkdir(), elsewhere.mkdir()
    (app / "beside_helper.py").write_text("def answer():\n    return 'from beside the script'\n")
    (elsewhere / "cwd_helper.py").write_text("VALUE = 'from the working directory'\n")
    (app / "main.py").write_text(textwrap.dedent("""
        import tasuki

        @tasuki.remote
        def use_helpers():
            import beside_helper, cwd_helper          # by name, inside the task: as under Ray
            return beside_helper.answer(), cwd_helper.VALUE

        @tasuki.remote
        def nested():
            return tasuki.get(use_helpers.remote())

        tasuki.init(num_cpus=1)
        print(tasuki.get(use_helpers.remote()), tasuki.get(nested.remote()))
        tasuki.shutdown()
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASUKI_")}
    env["PYTHONPATH"] = RUNTIME
    env["TASUKI_TMPDIR"] = str(tmp_path / "session")
    out = subprocess.run([sys.executable, str(app / "main.py")], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    expected = "('from beside the script', 'from the working directory')"
    assert out.stdout.strip() == f"{expected} {expected}", out.stdout


# --- item 8: GPU tasks in workers of their own --------------------------------------------------
def test_gpu_tasks_run_in_workers_whose_cuda_devices_never_change():
    @tasuki.remote
    def where():
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), tasuki.get_gpu_ids()

    on_gpu = where.options(num_gpus=1)
    original = os.environ.get("CUDA_VISIBLE_DEVICES")       # what the node (and so a CPU worker) starts with
    with embedded_cluster(num_cpus=2, num_gpus=2):
        cpu = tasuki.get([where.remote() for _ in range(4)])             # before: these workers are reused...
        gpu = tasuki.get([on_gpu.remote() for _ in range(8)])            # ...for GPU tasks, after CPU work
        cpu += tasuki.get([where.remote() for _ in range(4)])
        gpu += tasuki.get([on_gpu.remote() for _ in range(4)])
    assert all(env == original and ids == [] for _, env, ids in cpu)
    assert all(env == ",".join(map(str, ids)) and len(ids) == 1 for _, env, ids in gpu)
    assert {ids[0] for _, _, ids in gpu} <= {0, 1}
    assert not {pid for pid, _, _ in cpu} & {pid for pid, _, _ in gpu}  # no worker runs both
    gpus_of = {}
    for pid, env, _ in gpu:
        assert gpus_of.setdefault(pid, env) == env                     # a GPU worker keeps its GPU


# --- item 12: tasuki.util.multiprocessing.Pool follows Ray's, tasuki.Pool the standard library ------
def getpid(_=None):
    return os.getpid()


def fails_on_odd(x):
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


def test_ray_pool_connects_when_needed_and_checks_the_cpus():
    from tasuki.util.multiprocessing import Pool
    tasuki.shutdown()
    try:
        pool = Pool(processes=2)                              # starts a cluster of that many CPUs, as Ray's
        assert tasuki.is_initialized() and tasuki.cluster_resources()["CPU"] == 2
        assert len(set(pool.map(getpid, range(8), chunksize=1))) <= 2
        pool.terminate()
        pool.join()
        with pytest.raises(ValueError, match="pool with 3 processes on a cluster with only 2 CPUs"):
            Pool(processes=3)
        with pytest.raises(ValueError, match="must be >0"):
            Pool(processes=0)
    finally:
        tasuki.shutdown()


def test_ray_pool_spreads_a_maps_chunks_round_robin_as_ray_does():
    from tasuki.util.multiprocessing import Pool
    with embedded_cluster(num_cpus=4):
        with Pool(processes=4) as pool:
            pids = pool.map(getpid, range(100))              # chunks of 7: process k gets chunks k, k+4, ...
            counts = sorted(pids.count(pid) for pid in set(pids))
            assert counts == [21, 23, 28, 28]                # before: whichever was free, e.g. [14, 21, 30, 35]
            assert [pids[7 * k] for k in range(4)] == [pids[7 * k + 28] for k in range(4)]
            assert len(set(pool.map(getpid, range(8), chunksize=1))) == 4


def test_ray_pool_differs_from_the_standard_librarys_where_ray_does(tmp_path):
    from tasuki.util.multiprocessing import Pool

    def init(directory):
        (directory / str(os.getpid())).write_text("up")

    def nested(x):                                            # a pool inside a pool's task, on 1 CPU
        with Pool(ray_address="auto") as inner:
            return inner.map(abs, [-x, x])

    with embedded_cluster(num_cpus=1):
        with Pool(initializer=init, initargs=(tmp_path,)) as pool:
            assert len(os.listdir(tmp_path)) == 1             # the constructor waited for the initializer
            with pytest.raises(ValueError, match="odd item 1") as error:
                pool.map(fails_on_odd, range(6), chunksize=6)
            assert isinstance(error.value, tasuki.exceptions.TaskError)
            values = list(pool.imap(fails_on_odd, range(4), chunksize=4))    # errors come as values
            assert values[0] == 0 and values[2] == 2
            assert isinstance(values[1], ValueError) and isinstance(values[3], ValueError)
            assert "odd item 3" in str(values[3])
            assert sorted(map(str, pool.imap_unordered(fails_on_odd, [0, 2]))) == ["0", "2"]
            assert pool.apply(divmod, (7, 2)) == (3, 1) and pool.apply(dict, kwargs={"a": 1}) == {"a": 1}
            got = []
            pool.starmap_async(divmod, [(7, 2)], got.append).wait(30)      # Ray's order: the callback third
            wait_until(lambda: got == [[(3, 1)]], what="the starmap_async callback")
            for imap in (pool.imap, pool.imap_unordered):       # Ray 2.60: at the call (older Rays: one item)
                with pytest.raises(TypeError, match="'int' object is not iterable"):
                    imap(abs, -3)
            assert pool.map(nested, [1, 2]) == [[1, 1], [2, 2]]

        def broken(_):
            raise RuntimeError("no database")

        with pytest.raises(RuntimeError, match="no database"):
            Pool(processes=1, initializer=broken, initargs=(1,))
        pool = Pool(processes=1, ray_remote_args={"num_cpus": 1})        # reaches the actors: the CPU is held
        wait_until(lambda: tasuki.available_resources().get("CPU", 0) == 0, what="the pool process holding 1 CPU")
        pool.terminate()

        stdlib = tasuki.Pool(1)                                # the standard library's: the chunk stops at the error
        with pytest.raises(ValueError, match="odd item 1"):
            list(stdlib.imap(fails_on_odd, range(4)))
        stdlib.terminate()
