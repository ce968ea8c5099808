"""scheduler.py: placement, worker spawns, blocked workers lending CPUs, lost workers. Pure: no processes."""
from __future__ import annotations

import itertools

import pytest

from tasuki.scheduler import (BLOCKED, BUSY, DEAD, IDLE, Node, Scheduler, Task, fits, format_shape, shape_of,
                              times_fits)

NOW = 1000.0
_ids = itertools.count(1)


def make_node(node_id: str, cpus: float = 2, gpus: int = 0, **custom: float) -> Node:
    total = {"CPU": float(cpus), **{k: float(v) for k, v in custom.items()}}
    if gpus:
        total["GPU"] = float(gpus)
    return Node(node_id, f"tcp://{node_id}:7000", "10.0.0.1", dict(total), dict(total),
                gpu_ids=[str(i) for i in range(gpus)])


def make_task(name: str = "t", cpus: float = 1, **resources: float) -> Task:
    n = next(_ids)
    task_id = n.to_bytes(8, "little")
    return Task(task_id, b"fn", name, b"", [], [], [task_id + b"\0"], shape_of({"CPU": cpus, **resources}),
                max_retries=0, retry_exceptions=False)


def add_workers(sched: Scheduler, node_id: str, count: int) -> list:
    """Start `count` workers on a node and mark them ready (idle)."""
    workers = []
    for _ in range(count):
        wid = b"W" + next(_ids).to_bytes(8, "little")
        sched.worker_starting(node_id, wid)
        workers.append(sched.worker_ready(wid, pid=100, now=NOW))
    return workers


def cluster(*nodes: Node, workers: int = 0) -> Scheduler:
    sched = Scheduler()
    for node in nodes:
        sched.add_node(node, NOW)
        add_workers(sched, node.node_id, workers)
    return sched


def placed(assignments) -> dict:
    """task name -> node id of the worker it was given."""
    return {task.name: worker.node_id for task, worker in assignments}


def running(sched: Scheduler) -> dict:
    """task name -> node id, for the tasks that hold resources on a worker now."""
    return {w.task.name: w.node_id for w in sched.workers.values() if w.task is not None}


def waiting(sched: Scheduler) -> list:
    """Names of the tasks not started: queued, or sent ahead to a busy worker (pipelining)."""
    names = [t.name for q in sched.queues.values() for t in q]
    names += [t.name for w in sched.workers.values() for t in getattr(w, "backlog", ())]
    return sorted(names)


# --- shape helpers -----------------------------------------------------------------------------
def test_shape_helpers():
    shape = shape_of({"GPU": 1, "CPU": 2, "zero": 0})
    assert shape == (("CPU", 2), ("GPU", 1))             # sorted, zero amounts dropped
    assert fits({"CPU": 2, "GPU": 1}, shape) and not fits({"CPU": 2}, shape)
    assert times_fits({"CPU": 5, "GPU": 3}, shape) == 2
    assert times_fits({"CPU": 5}, ()) == float("inf")
    assert format_shape(shape) == "{CPU: 2, GPU: 1}"


# --- placement ---------------------------------------------------------------------------------
def test_tasks_are_placed_only_where_resources_fit():
    sched = cluster(make_node("small", cpus=1), make_node("big", cpus=4), workers=1)
    sched.enqueue(make_task("wide", cpus=2))
    assignments, spawns = sched.schedule(NOW)
    assert placed(assignments) == {"wide": "big"}
    assert sched.nodes["big"].available["CPU"] == 2
    assert sched.nodes["small"].available["CPU"] == 1
    task, worker = assignments[0]
    assert task.worker is worker and worker.task is task and worker.state == BUSY
    assert spawns == {}


def test_a_task_waits_while_its_node_is_full():
    sched = cluster(make_node("a", cpus=1), workers=2)
    sched.enqueue(make_task("first"))
    sched.enqueue(make_task("second"))
    assignments, spawns = sched.schedule(NOW)
    assert running(sched) == {"first": "a"}
    assert waiting(sched) == ["second"]
    assert spawns == {}                                  # an idle worker is there; the CPU is not
    assert sched.nodes["a"].available["CPU"] == 0
    worker = next(w for w in sched.workers.values() if w.task is not None)
    sched.task_done(worker, NOW)
    sched.schedule(NOW)
    assert running(sched) == {"second": "a"}
    assert sched.nodes["a"].available["CPU"] == 0


def test_custom_resources_steer_tasks_to_the_node_that_has_them():
    sched = cluster(make_node("plain", cpus=8), make_node("fast", cpus=2, ssd=1), workers=2)
    sched.enqueue(make_task("io-1", ssd=1))
    sched.enqueue(make_task("io-2", ssd=1))
    assignments, spawns = sched.schedule(NOW)
    assert running(sched) == {"io-1": "fast"}
    assert waiting(sched) == ["io-2"]                    # the only ssd is taken: the second waits
    assert spawns == {}                                  # and no worker is started for it
    assert all(w.node_id == "fast" for _, w in assignments)
    worker = next(w for w in sched.workers.values() if w.task is not None)
    sched.task_done(worker, NOW)
    sched.schedule(NOW)
    assert running(sched) == {"io-2": "fast"}
    assert sched.nodes["fast"].available == {"CPU": 1, "ssd": 0}
    assert sched.nodes["plain"].available == {"CPU": 8}


def test_gpu_ids_are_assigned_and_returned():
    sched = cluster(make_node("g", cpus=4, gpus=2), workers=3)
    tasks = [make_task(f"gpu-{i}", GPU=1) for i in range(3)]
    for t in tasks:
        sched.enqueue(t)
    assignments, _ = sched.schedule(NOW)
    assert len(assignments) == 2
    given = sorted(g for t, _ in assignments for g in t.gpu_ids)
    assert given == ["0", "1"]                           # each task has its own GPU
    assert sched.nodes["g"].gpu_ids == []
    assert sched.nodes["g"].available["GPU"] == 0
    assert sched.pending_count() == 1

    first_task, first_worker = assignments[0]
    freed = first_task.gpu_ids[0]
    sched.task_done(first_worker, NOW)
    assert first_task.gpu_ids == []
    assert sched.nodes["g"].gpu_ids == [freed]
    assignments, _ = sched.schedule(NOW)
    assert [t.gpu_ids for t, _ in assignments] == [[freed]]


def test_a_worker_that_ran_cpu_work_never_gets_a_gpu_task():
    sched = cluster(make_node("g", cpus=2, gpus=1), workers=1)
    (cpu_worker,) = sched.workers.values()
    sched.enqueue(make_task("cpu"))
    sched.schedule(NOW)
    sched.task_done(cpu_worker, NOW)                     # it may have initialised CUDA seeing no GPU
    sched.enqueue(make_task("gpu", GPU=1))
    assignments, spawns = sched.schedule(NOW)
    assert assignments == [] and spawns == {"g": 1}      # a fresh worker, though one is idle
    (fresh,) = add_workers(sched, "g", 1)
    (task, worker), = sched.schedule(NOW)[0]
    assert worker is fresh and task.gpu_ids == ["0"] and fresh.cuda == ("0",)


def test_a_gpu_worker_keeps_its_gpus_and_runs_no_cpu_task():
    sched = cluster(make_node("g", cpus=4, gpus=2), workers=2)
    for i in range(2):
        sched.enqueue(make_task(f"gpu-{i}", GPU=1))
    assignments = sched.schedule(NOW)[0]
    by_gpu = {t.gpu_ids[0]: w for t, w in assignments}
    for _, worker in assignments:
        sched.task_done(worker, NOW)
    sched.enqueue(make_task("cpu"))
    assignments, spawns = sched.schedule(NOW)
    assert assignments == [] and spawns == {"g": 1}      # the idle GPU workers do not take it
    sched.enqueue(make_task("busy-0", GPU=1))            # GPU 1 taken first: by its own worker...
    sched.nodes["g"].gpu_ids.remove("0")                 # (as if GPU 0 were held elsewhere)
    (task, worker), = sched.schedule(NOW)[0]
    assert task.gpu_ids == ["1"] and worker is by_gpu["1"]
    sched.task_done(worker, NOW)
    sched.nodes["g"].gpu_ids = ["0", "1"]
    sched.enqueue(make_task("again", GPU=1))
    (task, worker), = sched.schedule(NOW)[0]
    assert worker.cuda == tuple(task.gpu_ids)           # whichever worker: the GPU it always had


def test_gpu_ids_come_back_sorted():
    sched = cluster(make_node("g", cpus=4, gpus=3), workers=3)
    for i in range(3):
        sched.enqueue(make_task(f"gpu-{i}", GPU=1))
    assignments, _ = sched.schedule(NOW)
    for _, worker in reversed(assignments):
        sched.task_done(worker, NOW)
    assert sched.nodes["g"].gpu_ids == ["0", "1", "2"]


def test_a_multi_gpu_task_gets_that_many_ids():
    sched = cluster(make_node("g", cpus=4, gpus=4), workers=1)
    sched.enqueue(make_task("pair", GPU=2))
    (task, _), = sched.schedule(NOW)[0]
    assert task.gpu_ids == ["0", "1"]
    assert sched.nodes["g"].gpu_ids == ["2", "3"]


# --- worker spawns -------------------------------------------------------------------------------
def test_spawns_only_as_many_workers_as_tasks_that_fit():
    sched = cluster(make_node("a", cpus=2))
    for i in range(5):
        sched.enqueue(make_task(f"t{i}"))
    assignments, spawns = sched.schedule(NOW)
    assert assignments == []
    assert spawns == {"a": 2}                            # 5 tasks, but only 2 fit at once
    for _ in range(2):
        sched.worker_starting("a", b"W" + next(_ids).to_bytes(8, "little"))
    assert sched.schedule(NOW) == ([], {})               # the workers starting are counted

    for wid in list(sched.nodes["a"].workers):
        sched.worker_ready(wid, 1, NOW)
    assignments, spawns = sched.schedule(NOW)
    assert spawns == {}
    assert len(running(sched)) == 2 and len(waiting(sched)) == 3
    assert sched.nodes["a"].available["CPU"] == 0


def test_spawns_fewer_workers_than_cpus_for_fewer_tasks():
    sched = cluster(make_node("a", cpus=8))
    sched.enqueue(make_task("only"))
    assert sched.schedule(NOW) == ([], {"a": 1})


def test_spawns_go_to_the_node_where_the_task_fits():
    sched = cluster(make_node("cpu", cpus=8), make_node("gpu", cpus=2, gpus=1))
    sched.enqueue(make_task("train", GPU=1))
    assert sched.schedule(NOW) == ([], {"gpu": 1})


def test_no_spawn_for_a_task_that_fits_nowhere_now():
    sched = cluster(make_node("a", cpus=2))
    sched.enqueue(make_task("huge", cpus=4))
    assert sched.schedule(NOW) == ([], {})


# --- infeasible shapes -----------------------------------------------------------------------------
def test_infeasible_shapes_stay_queued_until_a_node_that_fits_joins():
    sched = cluster(make_node("cpu-only", cpus=4), workers=2)
    task = make_task("train", GPU=1)
    sched.enqueue(task)
    assert not sched.feasible(task.shape)
    for _ in range(3):
        assert sched.schedule(NOW) == ([], {})
    assert sched.pending_count() == 1
    assert list(sched.queues[task.key]) == [task]

    sched.add_node(make_node("gpu", cpus=2, gpus=1), NOW)
    assert sched.feasible(task.shape)
    assert sched.schedule(NOW) == ([], {"gpu": 1})


def test_feasibility_uses_total_not_available_resources():
    sched = cluster(make_node("a", cpus=2), workers=2)
    sched.enqueue(make_task("one", cpus=2))
    sched.schedule(NOW)
    assert sched.nodes["a"].available["CPU"] == 0
    assert sched.feasible(shape_of({"CPU": 2}))         # busy is not infeasible
    assert not sched.feasible(shape_of({"CPU": 3}))


def test_a_dead_node_makes_its_shape_infeasible_and_returns_its_workers():
    sched = cluster(make_node("a", cpus=2, ssd=1), workers=2)
    sched.enqueue(make_task("io", ssd=1))
    (task, worker), = sched.schedule(NOW)[0]
    lost = sched.remove_node("a")
    assert worker in lost and worker.task is task
    assert sched.nodes["a"].state == DEAD
    assert not sched.feasible(task.shape)
    assert sched.workers == {}


# --- blocked workers lend their CPUs -----------------------------------------------------------
def test_a_blocked_worker_lends_its_cpus_so_another_task_can_start():
    sched = cluster(make_node("a", cpus=1), workers=2)
    sched.enqueue(make_task("parent"))
    (parent, pw), = sched.schedule(NOW)[0]
    sched.enqueue(make_task("child", cpus=0.5))
    assert sched.schedule(NOW) == ([], {})               # no CPU left for the child

    sched.worker_blocked(pw)                             # the parent waits in get(child)
    assert pw.state == BLOCKED
    assert sched.nodes["a"].available["CPU"] == 1
    (child, cw), = sched.schedule(NOW)[0]
    assert child.name == "child" and cw is not pw
    assert sched.nodes["a"].available["CPU"] == 0.5

    sched.task_done(cw, NOW)                             # the child ends, the parent resumes
    sched.worker_unblocked(pw)
    assert pw.state == BUSY
    assert sched.nodes["a"].available["CPU"] == 0
    sched.task_done(pw, NOW)
    assert sched.nodes["a"].available["CPU"] == 1


def test_resuming_before_the_borrower_ends_overcommits_for_a_while():
    sched = cluster(make_node("a", cpus=1), workers=2)
    sched.enqueue(make_task("parent"))
    (_, pw), = sched.schedule(NOW)[0]
    sched.worker_blocked(pw)
    sched.enqueue(make_task("child"))
    (_, cw), = sched.schedule(NOW)[0]
    sched.worker_unblocked(pw)
    assert sched.nodes["a"].available["CPU"] == -1
    sched.task_done(pw, NOW)
    sched.task_done(cw, NOW)
    assert sched.nodes["a"].available["CPU"] == 1


def test_a_task_that_ends_while_blocked_returns_exactly_its_resources():
    sched = cluster(make_node("a", cpus=2, gpus=1), workers=1)
    sched.enqueue(make_task("gpu", GPU=1))
    (_, worker), = sched.schedule(NOW)[0]
    sched.worker_blocked(worker)
    assert sched.nodes["a"].available == {"CPU": 2, "GPU": 0}     # the GPU is not lent
    sched.task_done(worker, NOW)                          # e.g. cancelled while in get
    assert sched.nodes["a"].available == {"CPU": 2, "GPU": 1}
    assert sched.nodes["a"].gpu_ids == ["0"]


def test_blocking_starts_a_worker_when_none_is_idle():
    sched = cluster(make_node("a", cpus=1), workers=1)
    sched.enqueue(make_task("parent"))
    (_, pw), = sched.schedule(NOW)[0]
    sched.enqueue(make_task("child"))
    sched.worker_blocked(pw)
    assert sched.schedule(NOW) == ([], {"a": 1})


def test_a_chain_of_blocked_tasks_deeper_than_the_worker_cap_still_progresses():
    """Each level of a recursive task blocks in get; blocked workers must not count against the
    node's worker cap, or a chain deeper than the cap deadlocks."""
    sched = cluster(make_node("a", cpus=1))
    depth = sched.nodes["a"].max_workers() + 3
    for level in range(depth):
        sched.enqueue(make_task(f"level-{level}"))
        assignments, spawns = sched.schedule(NOW)
        if not assignments:
            assert spawns == {"a": 1}, f"level {level}: no worker started for the next level"
            add_workers(sched, "a", 1)
            assignments, spawns = sched.schedule(NOW)
        (_, worker), = assignments
        sched.worker_blocked(worker)                     # it waits for the next level
    assert len(sched.nodes["a"].workers) == depth


def test_the_worker_cap_holds_for_workers_that_are_not_blocked():
    sched = cluster(make_node("a", cpus=1))
    cap = sched.nodes["a"].max_workers()
    add_workers(sched, "a", cap)
    for i in range(cap):                                 # all busy, none blocked: CPUs overcommitted
        sched.enqueue(make_task(f"t{i}", cpus=0.25))
    assert len(sched.schedule(NOW)[0]) == 4
    sched.enqueue(make_task("more", cpus=0))
    assignments, spawns = sched.schedule(NOW)
    assert spawns == {}                                  # the node is at its cap


# --- pipelining --------------------------------------------------------------------------------
def test_a_task_queued_behind_a_busy_worker_moves_to_a_worker_that_goes_idle():
    sched = cluster(make_node("a", cpus=2), workers=2)
    sched.enqueue(make_task("long-1"))
    sched.enqueue(make_task("long-2"))
    sched.schedule(NOW)
    sched.enqueue(make_task("short"))
    sched.schedule(NOW)                                  # no idle worker: it waits behind one
    victim, = [w for w in sched.workers.values() if w.backlog]
    other = next(w for w in sched.workers.values() if w is not victim)
    assert sched.steals() == []                          # nobody is idle yet
    sched.task_done(other, NOW)                          # a CPU frees on the other worker
    (task, asked), = sched.steals()                      # ask the busy worker to give it back
    assert task.name == "short" and asked is victim
    assert sched.steals() == []                          # asked once only
    sched.return_backlog(victim, {task.task_id})         # the worker had not started it
    sched.schedule(NOW)
    assert "short" in running(sched) and other.task is task


def steal_requested():
    """Two long tasks on two workers, "short" queued behind one of them; the other worker goes
    idle and the head asks for "short" back. Returns (scheduler, busy worker, idle worker, task)."""
    sched = cluster(make_node("a", cpus=2), workers=2)
    for name in ("long-1", "long-2", "short"):
        sched.enqueue(make_task(name))
    sched.schedule(NOW)
    victim, = [w for w in sched.workers.values() if w.backlog]
    other = next(w for w in sched.workers.values() if w is not victim)
    sched.task_done(other, NOW)
    (task, _), = sched.steals()
    return sched, victim, other, task


def test_a_stolen_task_given_back_after_its_promotion_is_not_lost():
    """The busy worker's DONE crosses the STEAL: the head promotes the task, then the worker's
    RETURNED says it never ran it. It must be requeued, not left as the worker's phantom task."""
    sched, victim, other, task = steal_requested()
    sched.task_done(victim, NOW)                         # promoted to the victim's current task
    assert victim.task is task
    sched.return_backlog(victim, {task.task_id}, NOW)    # ...but the worker gave it back unstarted
    assert victim.task is None and sched.pending_count() == 1
    sched.schedule(NOW)
    assert list(running(sched)) == ["short"]             # runs once, on a worker that is free


def test_a_queued_task_the_worker_started_stays_with_it():
    sched, victim, other, task = steal_requested()
    sched.task_done(victim, NOW)                         # the worker started it: no RETURNED comes
    sched.schedule(NOW)
    assert victim.task is task and sched.pending_count() == 0 and other.task is None


@pytest.mark.parametrize("mean, depth", [
    (None, 1),          # never seen finishing: as for a long task
    (5.0, 1),
    (0.002, 1),         # as long as the round trip it would hide
    (0.001, 2),
    (0.0005, 4),
    (0.0001, 16),       # 20 would cover 2 ms: capped
    (0.0, 16),
])
def test_pipeline_depth_follows_the_functions_run_time(mean, depth):
    sched = Scheduler()
    if mean is not None:
        sched.run_time[b"fn"] = mean
    assert sched.pipeline_depth(b"fn") == depth


def make_fn_task(fn_id: bytes, name: str) -> Task:
    task = make_task(name)
    task.fn_id = fn_id
    return task


def run_once(sched: Scheduler, fn_id: bytes, seconds: float) -> None:
    """Run one task of `fn_id` that takes `seconds`, so the scheduler learns its run time."""
    sched.enqueue(make_fn_task(fn_id, "probe"))
    (task, worker), = sched.schedule(NOW)[0]
    sched.task_done(worker, NOW + seconds)


@pytest.mark.parametrize("seconds, queued_per_worker", [(0.00005, 16), (0.0005, 4), (0.5, 1)])
def test_short_tasks_queue_deeper_behind_busy_workers_than_long_ones(seconds, queued_per_worker):
    sched = cluster(make_node("a", cpus=2), workers=2)
    run_once(sched, b"f", seconds)
    for i in range(40):
        sched.enqueue(make_fn_task(b"f", f"t{i}"))
    sched.schedule(NOW)
    assert sorted(len(w.backlog) for w in sched.workers.values()) == [queued_per_worker] * 2
    assert sched.pending_count() == 40 - 2 - 2 * queued_per_worker


def test_the_run_time_is_a_moving_average_and_ignores_actor_creation():
    sched = cluster(make_node("a", cpus=1), workers=1)
    run_once(sched, b"f", 1.0)
    assert sched.run_time[b"f"] == pytest.approx(1.0)
    for _ in range(60):
        run_once(sched, b"f", 0.0001)
    assert sched.pipeline_depth(b"f") == 16          # a long first run does not pin it at 1 for ever
    creation = make_fn_task(b"A", "actor")
    creation.actor = {"actor_id": b"a1", "max_concurrency": 1, "is_async": False}
    worker = next(iter(sched.workers.values()))
    worker.task = creation
    sched.task_done(worker, NOW + 3.0)
    assert b"A" not in sched.run_time


# --- workers that exit -------------------------------------------------------------------------
def test_worker_gone_returns_the_lost_task_and_frees_its_resources():
    sched = cluster(make_node("a", cpus=2, gpus=1), workers=2)
    sched.enqueue(make_task("victim", GPU=1))
    (task, worker), = sched.schedule(NOW)[0]
    gone, lost = sched.worker_gone(worker.worker_id, NOW + 1)
    assert gone is worker and lost is task
    node = sched.nodes["a"]
    assert node.available == {"CPU": 2, "GPU": 1}
    assert node.gpu_ids == ["0"]
    assert worker.worker_id not in sched.workers and worker.worker_id not in node.workers
    assert node.idle_since == NOW + 1                    # nothing runs on it any more


def test_a_crashed_worker_is_replaced_rather_than_its_cpu_left_idle():
    """With one of two workers gone, a second task must start a worker on the free CPU, not queue
    behind the busy one (it ran serially on one worker after any crash)."""
    sched = cluster(make_node("a", cpus=2), workers=2)
    crashed = next(iter(sched.workers.values()))
    sched.worker_gone(crashed.worker_id, NOW)
    sched.enqueue(make_task("first"))
    sched.enqueue(make_task("second"))
    assignments, spawns = sched.schedule(NOW)
    assert [t.name for t, _ in assignments] == ["first"]
    assert spawns == {"a": 1} and waiting(sched) == ["second"]
    assert not any(w.backlog for w in sched.workers.values())


def test_worker_gone_for_idle_starting_and_unknown_workers():
    sched = cluster(make_node("a", cpus=2), workers=1)
    idle = sched.nodes["a"].idle_workers[0]
    assert sched.worker_gone(idle.worker_id, NOW) == (idle, None)
    assert sched.nodes["a"].idle_workers == []
    sched.worker_starting("a", b"Wstarting")
    assert sched.nodes["a"].starting == 1
    worker, task = sched.worker_gone(b"Wstarting", NOW)
    assert worker is not None and task is None
    assert sched.nodes["a"].starting == 0
    assert sched.worker_gone(b"Wunknown", NOW) == (None, None)


def test_a_lost_task_requeued_at_the_front_runs_first():
    sched = cluster(make_node("a", cpus=1), workers=1)
    sched.enqueue(make_task("lost"))
    (lost, worker), = sched.schedule(NOW)[0]
    sched.enqueue(make_task("later"))
    sched.worker_gone(worker.worker_id, NOW)
    lost.worker = None
    sched.requeue_front(lost)
    add_workers(sched, "a", 1)
    sched.schedule(NOW)
    assert running(sched) == {"lost": "a"}
    assert waiting(sched) == ["later"]


def nested(name: str, depth: int) -> Task:
    task = make_task(name)
    task.depth = depth
    return task


def test_deeper_tasks_queue_ahead_fifo_within_a_depth():
    sched = Scheduler()
    for task in (nested("f1", 0), nested("f2", 0), nested("g1", 1), nested("f3", 0), nested("h1", 2),
                 nested("g2", 1)):
        sched.enqueue(task)
    queue, = sched.queues.values()
    assert [t.name for t in queue] == ["h1", "g1", "g2", "f1", "f2", "f3"]
    sched.requeue_front(nested("f0", 0))          # a returned top-level task: first of its depth only
    sched.requeue_front(nested("h0", 2))
    assert [t.name for t in queue] == ["h0", "h1", "g1", "g2", "f0", "f1", "f2", "f3"]


def test_the_cpu_a_blocked_task_lends_goes_to_the_task_it_waits_for():
    # before: FIFO, so f2 took the lent CPU (and blocked beside f1), and so on for every f: a worker each
    sched = cluster(make_node("a", cpus=1), workers=2)
    for name in ("f1", "f2", "f3"):
        sched.enqueue(nested(name, 0))
    (f1, worker), = sched.schedule(NOW)[0]
    sched.enqueue(nested("g1", 1))                # f1 submits g1 and waits for it in get
    sched.worker_blocked(worker, [])
    sched.schedule(NOW)
    assert running(sched) == {"f1": "a", "g1": "a"}


def test_worker_ready_only_for_workers_that_were_asked_for():
    sched = cluster(make_node("a", cpus=1))
    assert sched.worker_ready(b"Wstranger", 1, NOW) is None
    sched.worker_starting("a", b"Wmine")
    worker = sched.worker_ready(b"Wmine", 42, NOW)
    assert worker.state == IDLE and worker.pid == 42
    assert sched.worker_ready(b"Wmine", 42, NOW) is None          # a second HELLO is ignored


def test_remove_pending():
    sched = cluster(make_node("a", cpus=1))
    task = make_task("cancel-me")
    sched.enqueue(task)
    assert sched.remove_pending(task)
    assert not sched.remove_pending(task)
    assert sched.pending_count() == 0


# --- surplus workers and idleness ------------------------------------------------------------------
def test_surplus_idle_workers_are_those_above_the_cpu_count():
    sched = cluster(make_node("a", cpus=2), workers=5)
    surplus = sched.surplus_idle_workers(sched.nodes["a"])
    assert len(surplus) == 3
    assert all(w.state == IDLE for w in surplus)
    for worker in surplus:
        sched.worker_gone(worker.worker_id, NOW)
    assert sched.surplus_idle_workers(sched.nodes["a"]) == []


def test_busy_workers_are_never_surplus():
    sched = cluster(make_node("a", cpus=1), workers=3)
    for i in range(3):
        sched.enqueue(make_task(f"t{i}", cpus=0.25))
    sched.schedule(NOW)
    assert sched.surplus_idle_workers(sched.nodes["a"]) == []


def test_a_node_with_fewer_workers_than_cpus_has_no_surplus():
    sched = cluster(make_node("a", cpus=4), workers=2)
    assert sched.surplus_idle_workers(sched.nodes["a"]) == []


def test_idle_since_tracks_running_tasks():
    sched = cluster(make_node("a", cpus=1), workers=1)
    node = sched.nodes["a"]
    assert node.idle_since == NOW
    sched.enqueue(make_task("t"))
    (_, worker), = sched.schedule(NOW + 5)[0]
    assert node.idle_since is None
    sched.task_done(worker, NOW + 7)
    assert node.idle_since == NOW + 7


@pytest.mark.parametrize("cpus, expected", [(0.5, 4), (1, 4), (2, 8), (16, 64)])
def test_max_workers(cpus, expected):
    assert make_node("a", cpus=cpus).max_workers() == expected


# --- label selectors and fractional CPUs (issue 16) ----------------------------------------------
def labelled_node(node_id: str, cpus: float = 2, **labels: str) -> Node:
    node = make_node(node_id, cpus)
    node.labels = dict(labels)
    return node


def selecting(name: str, selector: dict, cpus: float = 1) -> Task:
    from tasuki.labels import parse_selector
    task = make_task(name, cpus)
    task.selector = parse_selector(selector)
    return task


@pytest.mark.parametrize("selector, where", [
    ({"zone": "b"}, {"b"}),
    ({"zone": "!b"}, {"a", "none"}),                  # a node without the label matches a negation
    ({"zone": "in(a,b)"}, {"a", "b"}),
    ({"zone": "!in(a,b)"}, {"none"}),
    ({"zone": "a", "disk": "ssd"}, {"a"}),
    ({"disk": "nvme"}, set()),
])
def test_a_selector_places_only_on_matching_nodes(selector, where):
    sched = cluster(labelled_node("a", zone="a", disk="ssd"), labelled_node("b", zone="b"), labelled_node("none"),
                    workers=2)
    for i in range(6):
        sched.enqueue(selecting(f"t{i}", selector))
    assignments, spawns = sched.schedule(NOW)
    assert set(placed(assignments).values()) == where
    assert set(spawns) <= where                       # workers start only where the tasks may run
    assert sched.feasible(shape_of({"CPU": 1}), selecting("x", selector).selector) == bool(where)


def test_tasks_with_and_without_a_selector_queue_apart():
    sched = cluster(labelled_node("a", zone="a"), workers=0)
    plain, chosen = make_task("plain"), selecting("chosen", {"zone": "a"})
    sched.enqueue(plain)
    sched.enqueue(chosen)
    assert set(sched.queues) == {(plain.shape, ()), (chosen.shape, chosen.selector)}
    assert chosen.key == (chosen.shape, (("zone", False, ("a",)),))
    assert sched.remove_pending(chosen) and sched.pending_count() == 1


def test_half_cpu_tasks_pack_three_on_one_and_a_half_cpus():
    sched = cluster(make_node("n", cpus=1.5), workers=0)
    for i in range(4):
        sched.enqueue(make_task(f"t{i}", cpus=0.5))
    _, spawns = sched.schedule(NOW)
    assert spawns == {"n": 3}                          # three fit at once; the fourth waits
    add_workers(sched, "n", 3)
    sched.schedule(NOW)
    running = [w for w in sched.workers.values() if w.task is not None]
    assert len(running) == 3 and sum(len(w.backlog) for w in running) == 1     # the fourth queues behind one
    assert sched.nodes["n"].max_workers() == 6 and abs(sched.nodes["n"].available["CPU"]) < 1e-9
