"""The tasuki Kubernetes operator (kopf): Cluster resources to head and worker pods, autoscaled.

Not built yet: the runtime comes first. The runtime already serves what this package will read:
GET /api/v1/demand and POST /api/v1/nodes/{id}/drain on the head's metrics port.
"""
