"""The tasuki Kubernetes operator: `Cluster` resources (clusters.tasuki.dev) become a head pod and
worker pods that scale with the head's pending queue.

Built so far, pure (no kopf, no kubernetes client, no I/O, no clock; tests/test_isolation.py
keeps them so), for the kopf handlers and the API module to call:
- `crd.yaml`       the CustomResourceDefinition: the one source of the schema, defaults, CEL rules,
                   subresources and printer columns (the tests, the Helm chart and kubectl use it)
- `spec.py`        the spec's defaults (read from crd.yaml) and the checks the operator makes itself
- `quantity.py`    Kubernetes quantities, exactly
- `manifests.py`   Cluster → Secret, head Service, head Pod, worker Pods
- `autoscaler.py`  plan(demand, groups, pods, now, settings): what to create, drain and delete, and why
- `status.py`      the Cluster's status from its pods, the head's demand and the last plan
- `rbac.yaml`, `rbac.py`   the operator's permissions, in one place
and the two I/O modules:
- `head_api.py`    the head's HTTP API (demand, nodes, drain) behind the `--head-url` template (stdlib)
- `kube.py`        the only module that calls the Kubernetes API (the official client; no kopf)

Still to build (issue 13): `handlers.py` (thin kopf handlers) and the `tasuki-operator` command
with its metrics. tests/kube_emulator.py (an API
emulation over HTTP) and tests/fake_head.py are ready for their tests.
The runtime serves what they read: GET /api/v1/demand and POST /api/v1/nodes/{id}/drain on the
head's metrics port, each node with the pod name and group it was started with.
"""
