"""The kopf layer: thin handlers that start, wake and stop one reconcile loop per Cluster.

    kopf watch: Clusters ──event──► cluster_event ──► Loops.ensure(ns/name), wake on spec changes
    kopf watch: our pods ──event──► pod_event ─────► Loops.wake(ns/<tasuki.dev/cluster label>)
                                                     (and the Job loop of that name: an inline cluster)
    kopf watch: Jobs ─────event──► job_event ─────► job Loops.ensure(ns/name), wake on spec changes
    Loops: one asyncio task per Cluster:  while the Cluster exists:
               delay = controller.reconcile(ns, name, memory)   (in a thread of its own pool)
               wait for `delay` seconds or a wake-up, whichever comes first
           (and a second Loops, one task per tasuki Job, over job_controller.JobController)

Why loops of our own rather than kopf's timers or daemons: kopf puts a finalizer on every object
that has a daemon or timer, so a Cluster could not be deleted while the operator is down (KubeRay
users report exactly that with stuck finalizers, kuberay#4767). Everything the operator makes has an
owner reference, so garbage collection does the clean-up and no finalizer is needed; kopf here only
watches (no progress annotations, no finalizers, no handler Events: the controller posts its own).

One slow Cluster never delays another: each loop's reconcile runs in a thread of a pool sized for
many Clusters (`--workers`), every API and head request is bounded, and a loop waits on its own
timer. A Cluster's status changes do not wake its loop (the loop wrote them); spec, label and
deletion changes do, and so does any change to its pods (a deleted worker is replaced at once).

main.py installs these handlers with `kopf.run(..., memo=kopf.Memo(loops=Loops(...), job_loops=Loops(...)))`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import kopf

from .controller import ClusterMemory, Controller
from .kube import GROUP, JOBS, VERSION, CLUSTERS
from .manifests import LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY

__all__ = ["Loops", "cluster_event", "job_event", "pod_event"]

log = logging.getLogger("tasuki_operator")

MIN_GAP_S = 0.5              # seconds between two reconciles of one Cluster, however often it is woken
HEARTBEAT_S = 1.0            # the event loop's heartbeat (for /healthz)


class Loops:
    """The per-object reconcile loops of this operator process: one per Cluster (a `Controller`), or,
    with `memory=JobMemory`, one per tasuki Job (a `JobController`)."""

    def __init__(self, controller: Controller, workers: int = 32, memory: Callable[[], object] = ClusterMemory,
                 kind: str = "clusters") -> None:
        self.controller = controller
        self.new_memory = memory
        self.kind = kind
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tasuki-reconcile")
        self.tasks: dict[tuple[str, str], asyncio.Task] = {}
        self.wakers: dict[tuple[str, str], asyncio.Event] = {}
        self.generations: dict[tuple[str, str], object] = {}
        self.memories: dict[tuple[str, str], ClusterMemory] = {}
        self.beat = time.monotonic()

    def ensure(self, key: tuple[str, str]) -> None:
        """Start the Cluster's loop unless it runs."""
        task = self.tasks.get(key)
        if task is None or task.done():
            self.wakers[key] = asyncio.Event()
            self.tasks[key] = asyncio.create_task(self._run(key), name=f"tasuki-{self.kind}-{key[0]}/{key[1]}")

    def wake(self, key: tuple[str, str]) -> None:
        """Reconcile the Cluster now (after the current reconcile, if one runs)."""
        waker = self.wakers.get(key)
        if waker is not None:
            waker.set()

    async def stop(self, key: tuple[str, str]) -> None:
        task = self.tasks.pop(key, None)
        self.wakers.pop(key, None)
        self.generations.pop(key, None)
        self.memories.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop_all(self) -> None:
        for key in list(self.tasks):
            await self.stop(key)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def heartbeat(self) -> None:
        """Beat while the process's event loop runs (main.py starts it before the leader election, so a
        standby replica is healthy too)."""
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    def healthy(self) -> tuple[bool, str]:
        """For /healthz: the event loop answers, and how many Clusters failed their last reconcile."""
        late = time.monotonic() - self.beat
        if late > 10 * HEARTBEAT_S:
            return False, f"the operator's event loop has not run for {late:.0f} s"
        failing = sorted(f"{ns}/{name}" for (ns, name), m in list(self.memories.items()) if not m.healthy)
        return True, f"ok: {len(self.tasks)} {self.kind}" + (f", last reconcile failed for {', '.join(failing)}"
                                                           if failing else "")

    async def _run(self, key: tuple[str, str]) -> None:
        ns, name = key
        memory = self.memories.setdefault(key, self.new_memory())
        loop = asyncio.get_running_loop()
        log.info("[%s/%s] reconcile loop started", ns, name)
        while True:
            started = loop.time()
            try:
                delay = await loop.run_in_executor(self.executor, self.controller.reconcile, ns, name, memory)
            except Exception:          # a bug must not end the loop: report it and retry later
                log.exception("[%s/%s] reconcile crashed; retrying in 5 s", ns, name)
                delay = 5.0
            if delay is None:
                break
            waker = self.wakers[key]
            try:
                await asyncio.wait_for(waker.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            waker.clear()
            gap = MIN_GAP_S - (loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)
        self.tasks.pop(key, None)
        self.wakers.pop(key, None)
        self.memories.pop(key, None)
        log.info("[%s/%s] reconcile loop ended", ns, name)


@kopf.on.startup()
async def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    settings.scanning.disabled = True          # no cluster-wide CRD or namespace watching (rbac.yaml)
    settings.posting.enabled = False           # the controller posts its own Events, with reasons
    settings.watching.server_timeout = 300     # re-list every 5 minutes: nothing missed for long


@kopf.on.cleanup()
async def operator_cleanup(memo: kopf.Memo, **_) -> None:
    await memo.loops.stop_all()
    await memo.job_loops.stop_all()


@kopf.on.event(GROUP, VERSION, CLUSTERS)
async def cluster_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    """A Cluster appeared, changed or went: start, wake or stop its loop."""
    loops: Loops = memo.loops
    key = (namespace, name)
    if type == "DELETED":
        await loops.stop(key)
        loops.controller.metrics.forget(namespace, name)
        return
    meta = body.get("metadata", {})
    seen = (meta.get("generation"), bool(meta.get("deletionTimestamp")), tuple(sorted((meta.get("labels") or {}).items())))
    if key not in loops.tasks:
        loops.ensure(key)
    elif loops.generations.get(key) != seen:
        loops.wake(key)
    loops.generations[key] = seen


@kopf.on.event(GROUP, VERSION, JOBS)
async def job_event(type: str | None, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    """A tasuki Job appeared, changed or went: start, wake or stop its loop (status changes, which its
    loop writes, wake nothing)."""
    loops: Loops = memo.job_loops
    key = (namespace, name)
    if type == "DELETED":
        await loops.stop(key)
        return
    meta = body.get("metadata", {})
    seen = (meta.get("generation"), bool(meta.get("deletionTimestamp")))
    if key not in loops.tasks:
        loops.ensure(key)
    elif loops.generations.get(key) != seen:
        loops.wake(key)
    loops.generations[key] = seen


@kopf.on.event("", "v1", "pods", labels={LABEL_CLUSTER: kopf.PRESENT, LABEL_MANAGED_BY: MANAGED_BY})
async def pod_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_) -> None:
    """One of a Cluster's pods changed: reconcile that Cluster now, and the Job of the same name (the
    Job an inline cluster was made for: its head may just have become ready)."""
    memo.loops.wake((namespace, labels[LABEL_CLUSTER]))
    memo.job_loops.wake((namespace, labels[LABEL_CLUSTER]))


@kopf.on.login()
def operator_login(memo: kopf.Memo, **_) -> kopf.ConnectionInfo:
    """kopf connects with the same credentials as the controller (kube.py's kubeconfig or in-cluster)."""
    cfg = memo.loops.controller.kube.api_client.configuration
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                               username=cfg.username or None, password=cfg.password or None,
                               scheme=scheme or None, token=token or None,
                               certificate_path=cfg.cert_file, private_key_path=cfg.key_file)
