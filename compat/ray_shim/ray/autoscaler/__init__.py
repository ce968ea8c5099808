"""ray.autoscaler -> tasuki.autoscaler (request_resources)."""
from tasuki.autoscaler import request_resources  # noqa: F401
