"""The tasuki Kubernetes operator: `Cluster` resources (clusters.tasuki.dev) become a head pod and
worker pods that scale with the head's pending queue; `Job` resources (jobs.tasuki.dev) run one
entrypoint to the end on a Cluster (existing, or made for the Job).

Pure (no kopf, no kubernetes client, no I/O, no clock; tests/test_isolation.py keeps them so):
- `crd.yaml`       the CustomResourceDefinition: the one source of the schema, defaults, CEL rules,
                   subresources and printer columns (the tests, the Helm chart and kubectl use it)
- `spec.py`        the spec's defaults (read from crd.yaml) and the checks the operator makes itself
- `quantity.py`    Kubernetes quantities, exactly
- `manifests.py`   Cluster → Secret, head Service, head Pod, worker Pods
- `autoscaler.py`  plan(demand, groups, pods, now, settings): what to create, drain and delete, and why
- `reconcile.py`   decide(observed, now, ...): one reconcile's actions (setup, replacement, suspend,
                   image roll, the plan's actions) and the safety rules around them
- `status.py`      the Cluster's status from its pods, the head's demand and the last plan
- `job_crd.yaml`   the Job's CustomResourceDefinition
- `job_plan.py`    plan(observed, now): a Job's next step (create the cluster, submit, mirror, retry,
                   stop at the deadline, clean up, TTL) and its status and Events
- `rbac.yaml`, `rbac.py`   the operator's permissions, in one place

I/O, each at one edge:
- `kube.py`        the only module that calls the Kubernetes API (the official client; no kopf)
- `head_api.py`    the head's HTTP API (demand, nodes, drain, jobs) behind the `--head-url` template (stdlib)
- `controller.py`  one reconcile: read (kube, head_api), decide (reconcile), act, report (status,
                   Events, metrics)
- `job_controller.py`  one reconcile of a Job: read (kube, head_api), plan (job_plan), act, report
- `handlers.py`    the only kopf module: one reconcile loop per Cluster and per Job, woken by watch events
- `leader.py`      leader election through a Lease, for more than one replica
- `metrics.py`     the operator's Prometheus metrics and its /metrics, /healthz server
- `main.py`        the `tasuki-operator` command

The runtime serves what the operator reads: GET /api/v1/demand and POST /api/v1/nodes/{id}/drain on
the head's metrics port, each node with the pod name and group it was started with.
"""
