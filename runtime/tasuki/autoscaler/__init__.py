"""Ask the cluster's autoscaler for capacity ahead of the work: Ray's `ray.autoscaler.sdk`.

    from tasuki.autoscaler import request_resources      # or tasuki.autoscaler.sdk
    request_resources(num_cpus=64)                         # scale to at least 64 CPUs
    request_resources(bundles=[{"GPU": 1, "CPU": 4}] * 8)  # replaces the request above
    request_resources()                                    # clears it

See sdk.py for the rules.
"""
from .sdk import request_resources

__all__ = ["request_resources"]
