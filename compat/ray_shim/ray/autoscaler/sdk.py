"""ray.autoscaler.sdk -> tasuki.autoscaler.sdk."""
from tasuki.autoscaler.sdk import request_resources  # noqa: F401
