"""The operator's own Prometheus metrics, and the HTTP server for `/metrics` and `/healthz`.

controller.py records into an `OperatorMetrics` (one registry per operator process, so tests can
make their own); main.py serves it with `serve(metrics, host, port, healthy)` on
`--metrics-host`/`--metrics-port`. Every series carries `namespace` and `cluster`: one busy or
failing Cluster is told apart from the others.

    tasuki_operator_reconciles_total{namespace,cluster,result}            result: ok | error
    tasuki_operator_errors_total{namespace,cluster,stage}                  stage: kube | head | action
    tasuki_operator_pods{namespace,cluster,group,phase}                    pods by phase per group
    tasuki_operator_group_pods{namespace,cluster,group,state}              state: desired | ready (the plan's
                                                                           count, and pods whose node is alive)
    tasuki_operator_scale_decisions_total{namespace,cluster,group,direction,reason}
                                                                           direction: up | down
    tasuki_operator_drain_duration_seconds{namespace,cluster}              first drain request -> deleted
    tasuki_operator_pending_to_ready_seconds{namespace,cluster,group}      demand first pending -> its pod Ready
    tasuki_operator_plan_seconds{namespace,cluster}                        one autoscaler plan (wall time)
    tasuki_operator_unplaceable_bundles{namespace,cluster}                 bundles no group can ever fit
    tasuki_operator_pending_tasks{namespace,cluster}                       the head's pending count
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["OperatorMetrics", "serve"]

PREFIX = "tasuki_operator"
DRAIN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)            # seconds: drains end within the grace period
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)            # seconds: a new node can take minutes
PLAN_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)   # seconds: the target is 50 ms at scale


RESULTS = ("ok", "error")                 # tasuki_operator_reconciles_total's `result`
STAGES = ("kube", "head", "action")       # tasuki_operator_errors_total's `stage`


class OperatorMetrics:
    """The operator's metric families in their own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        key = ("namespace", "cluster")
        self.reconciles = Counter(f"{PREFIX}_reconciles", "Reconciles of a Cluster, by result", key + ("result",),
                                  registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Errors while reconciling a Cluster, by stage", key + ("stage",),
                              registry=r)
        self.pods = Gauge(f"{PREFIX}_pods", "The Cluster's pods by group and phase", key + ("group", "phase"),
                          registry=r)
        self.scale_decisions = Counter(f"{PREFIX}_scale_decisions", "Pods added (up) or removed (down), by reason",
                                       key + ("group", "direction", "reason"), registry=r)
        self.drain_seconds = Histogram(f"{PREFIX}_drain_duration_seconds", "From the first drain request to the "
                                       "pod's deletion", key, buckets=DRAIN_BUCKETS, registry=r)
        self.pending_to_ready = Histogram(f"{PREFIX}_pending_to_ready_seconds", "From demand first pending to a pod "
                                          "created for it being Ready", key + ("group",), buckets=READY_BUCKETS,
                                          registry=r)
        self.plan_seconds = Histogram(f"{PREFIX}_plan_seconds", "Time to compute one autoscaler plan", key,
                                      buckets=PLAN_BUCKETS, registry=r)
        self.unplaceable = Gauge(f"{PREFIX}_unplaceable_bundles", "Pending bundles no worker group can ever fit",
                                 key, registry=r)
        self.pending_tasks = Gauge(f"{PREFIX}_pending_tasks", "Tasks pending at the head", key, registry=r)
        self.group_pods = Gauge(f"{PREFIX}_group_pods", "Worker pods per group the autoscaler's plan wants (desired) "
                                "and those whose node is alive at the head (ready)", key + ("group", "state"),
                                registry=r)
        self._pod_series: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._group_series: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def set_pods(self, namespace: str, cluster: str, counts: dict[tuple[str, str], int]) -> None:
        """Pods by (group, phase) for one Cluster; series of phases no longer seen drop to 0."""
        with self._lock:
            old = self._pod_series.get((namespace, cluster), set())
            for group, phase in old - set(counts):
                self.pods.labels(namespace, cluster, group, phase).set(0)
            for (group, phase), n in counts.items():
                self.pods.labels(namespace, cluster, group, phase).set(n)
            self._pod_series[(namespace, cluster)] = old | set(counts)

    def set_group_pods(self, namespace: str, cluster: str, counts: dict[str, tuple[int, int]]) -> None:
        """(desired, ready) worker pods by group for one Cluster; groups no longer planned drop to 0."""
        with self._lock:
            old = self._group_series.get((namespace, cluster), set())
            for group in old - set(counts):
                for state in ("desired", "ready"):
                    self.group_pods.labels(namespace, cluster, group, state).set(0)
            for group, (desired, ready) in counts.items():
                self.group_pods.labels(namespace, cluster, group, "desired").set(desired)
                self.group_pods.labels(namespace, cluster, group, "ready").set(ready)
            self._group_series[(namespace, cluster)] = old | set(counts)

    def start_counting(self, namespace: str, cluster: str) -> None:
        """Every result and stage of a Cluster's counters at 0, so that a healthy Cluster's error rate is a
        series of zeros (a dashboard's "Reconciles and errors" panel shows 0, not "No data")."""
        for result in RESULTS:
            self.reconciles.labels(namespace, cluster, result)
        for stage in STAGES:
            self.errors.labels(namespace, cluster, stage)

    def forget(self, namespace: str, cluster: str) -> None:
        """Drop the gauges of a deleted Cluster (counters and histograms stay, as Prometheus expects)."""
        with self._lock:
            for group, phase in self._pod_series.pop((namespace, cluster), set()):
                self.pods.remove(namespace, cluster, group, phase)
            for group in self._group_series.pop((namespace, cluster), set()):
                for state in ("desired", "ready"):
                    self.group_pods.remove(namespace, cluster, group, state)
            for gauge in (self.unplaceable, self.pending_tasks):
                try:
                    gauge.remove(namespace, cluster)
                except KeyError:
                    pass

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: OperatorMetrics, host: str, port: int, healthy: Callable[[], tuple[bool, str]]
          ) -> ThreadingHTTPServer:
    """Serve GET /metrics and /healthz (200 while `healthy()` says so, else 503 with its reason) in a
    daemon thread; returns the server (`.server_address` has the bound port; `.shutdown()` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args) -> None:     # scrapes every few seconds: keep the log for the operator
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self.reply(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = healthy()
                self.reply(200 if ok else 503, (why or "ok").encode() + b"\n", "text/plain; charset=utf-8")
            else:
                self.reply(404, b"not found: GET /metrics or /healthz\n", "text/plain; charset=utf-8")

        def reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tasuki-operator-metrics", daemon=True).start()
    return server
