"""`tasuki-operator`: the console script that runs the operator.

    tasuki-operator [--namespace NS]... [--kubeconfig PATH] [--context NAME] [--head-url TEMPLATE]
                    [--standalone | --lease-namespace NS] [--metrics-host H] [--metrics-port P]

Watches the Clusters and the tasuki Jobs of the given namespaces (all namespaces without --namespace), with the
credentials of a kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) or, inside a pod, of its
ServiceAccount. It serves /metrics and /healthz (metrics.py) and runs kopf with the handlers of
handlers.py. One replica runs with --standalone; with more, each waits to hold the Lease
`tasuki-operator` (leader.py) before it acts, and exits (for Kubernetes to restart it) if it loses it.

The head of each Cluster is reached at --head-url (or $TASUKI_OPERATOR_HEAD_URL), a template with
{name}, {namespace}, {service} and {port} (the head's HTTP port), default
http://{service}.{namespace}.svc:{port}: set it when the operator runs outside the cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import uuid

from .autoscaler import DEFAULT_PENDING_GRACE_S
from .head_api import DEFAULT_HEAD_URL, head_url

__all__ = ["main"]

DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT = "0.0.0.0", 8080
HEAD_URL_ENV = "TASUKI_OPERATOR_HEAD_URL"
EXIT_LOST_LEADERSHIP = 3

log = logging.getLogger("tasuki_operator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tasuki-operator", description="Run the tasuki Kubernetes operator: "
                                "Cluster resources become head and worker pods that scale with the pending queue.")
    p.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                   help="watch this namespace (repeatable); default: all namespaces (needs the ClusterRole)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--head-url", default=os.environ.get(HEAD_URL_ENV) or DEFAULT_HEAD_URL,
                   help=f"URL template of each head's HTTP API, placeholders {{name}} {{namespace}} {{service}} "
                        f"{{port}} (default: ${HEAD_URL_ENV} or {DEFAULT_HEAD_URL})")
    p.add_argument("--standalone", action="store_true",
                   help="one replica: no leader election (otherwise replicas elect a leader through a Lease)")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE"),
                   help="namespace of the leader Lease (default: $POD_NAMESPACE, else the first --namespace, "
                        "else 'default')")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname(),
                   help="this replica's name in the Lease (default: $POD_NAME or the host name)")
    p.add_argument("--metrics-host", default=DEFAULT_METRICS_HOST, help="address of /metrics and /healthz")
    p.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="port of /metrics and /healthz")
    p.add_argument("--pending-grace-seconds", type=float, default=DEFAULT_PENDING_GRACE_S, metavar="S",
                   help="a group whose pod stays Unschedulable this long backs off and its demand goes to another "
                        f"group (default {DEFAULT_PENDING_GRACE_S:g}: a node autoscaler takes 1-2 minutes)")
    p.add_argument("--workers", type=int, default=32, help="threads for reconciles (one per busy Cluster)")
    p.add_argument("--log-level", default=os.environ.get("TASUKI_OPERATOR_LOG_LEVEL", "INFO"),
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = p.parse_args(argv)
    try:
        head_url(args.head_url, name="demo", namespace="default", service="demo-head", port=8080)
    except ValueError as e:
        p.error(f"--head-url: {e}")
    if not 0 <= args.metrics_port <= 65535:
        p.error(f"--metrics-port {args.metrics_port}: give a port in 0-65535 (0: any free port)")
    if not args.pending_grace_seconds >= 0:
        p.error(f"--pending-grace-seconds {args.pending_grace_seconds}: give 0 or more seconds")
    if args.workers < 1:
        p.error(f"--workers {args.workers}: give 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kopf", "aiohttp", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    import kopf                                   # imported here so --help works without the operator extra
    from . import handlers  # noqa: F401  (registers the handlers with kopf)
    from .controller import Controller
    from .job_controller import JobController, JobMemory
    from .kube import Kube
    from .metrics import OperatorMetrics, serve

    try:
        kube = Kube.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as e:                        # kubernetes.config raises several kinds
        print(f"tasuki-operator: cannot load Kubernetes credentials: {e}. Pass --kubeconfig PATH, set KUBECONFIG, "
              "or run inside a pod with a ServiceAccount.", file=sys.stderr)
        return 2
    metrics = OperatorMetrics()
    controller = Controller(kube, metrics, args.head_url, pending_grace_s=args.pending_grace_seconds)
    loops = handlers.Loops(controller, workers=args.workers)
    job_loops = handlers.Loops(JobController(kube, args.head_url), workers=args.workers, memory=JobMemory,
                               kind="jobs")
    try:
        server = serve(metrics, args.metrics_host, args.metrics_port, loops.healthy)
    except OSError as e:
        print(f"tasuki-operator: cannot serve /metrics on {args.metrics_host}:{args.metrics_port}: {e}. "
              "Choose another --metrics-port.", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    where = ", ".join(args.namespace) if args.namespace else "all namespaces"
    log.info("tasuki-operator: watching Clusters and Jobs in %s; /metrics and /healthz on http://%s:%s; heads at %s",
             where, host, port, args.head_url)

    lease_ns = args.lease_namespace or (args.namespace[0] if args.namespace else "default")

    async def run() -> int:
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        heartbeat = asyncio.create_task(loops.heartbeat())        # /healthz: a standby waiting to lead is healthy
        elector = None
        if not args.standalone:
            from .leader import LeaderElector
            identity = f"{args.identity}_{uuid.uuid4().hex[:8]}"      # a restarted container is a new candidate
            elector = LeaderElector(kube, lease_ns, identity, on_lost=lambda reason: loop.call_soon_threadsafe(stop.set))
            log.info("tasuki-operator: waiting to lead (Lease %s/%s, identity %s)", lease_ns, elector.name, identity)
            if not await asyncio.to_thread(elector.acquire):
                return EXIT_LOST_LEADERSHIP
            log.info("tasuki-operator: leading as %s", identity)
        try:
            await kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace, standalone=True,
                                memo=kopf.Memo(loops=loops, job_loops=job_loops), stop_flag=stop)
        finally:
            heartbeat.cancel()
            if elector is not None:
                await asyncio.to_thread(elector.release)           # the next replica takes over at once
        if elector is not None and elector.lost.is_set():
            log.error("tasuki-operator: lost the Lease; exiting so that a fresh replica can take over")
            return EXIT_LOST_LEADERSHIP
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
