"""`request_resources`: the cluster's standing request to the autoscaler (Ray's semantics).

The request says "make the cluster at least this large": a list of bundles (resource shapes) that
the operator's autoscaler packs into the TOTAL capacity of the cluster's nodes, whatever runs on
them now, and opens pods for what does not fit (see tasuki_operator.autoscaler). Each call replaces
the previous request, from any driver; a call with nothing (or num_cpus=0 and bundles=[]) clears
it. It stays after the driver that made it exits, as in Ray. The head keeps it (message
REQUEST_RESOURCES) and shows it in GET /api/v1/demand as "requested" and in `tasuki status`.
"""
from __future__ import annotations

from .. import protocol as P
from ..scheduler import shape_of


def bundles_of(num_cpus: int | None = None, bundles: list | None = None) -> list[tuple[tuple, int]]:
    """[(shape, count)] for the head: num_cpus one-CPU bundles plus `bundles`, equal shapes merged
    (pure). ValueError or TypeError naming the argument and the value."""
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 0):
        raise TypeError(f"request_resources(num_cpus={num_cpus!r}): give a whole number of CPUs, 0 or more")
    if bundles is not None and not isinstance(bundles, (list, tuple)):
        raise TypeError(f"request_resources(bundles={bundles!r}): give a list of dicts such as "
                        f"[{{'CPU': 4, 'GPU': 1}}]"[:300])
    counts: dict[tuple, int] = {}
    if num_cpus:
        counts[(("CPU", 1.0),)] = num_cpus
    for i, bundle in enumerate(bundles or ()):
        if not isinstance(bundle, dict):
            raise TypeError(f"request_resources: bundles[{i}] is {bundle!r}, not a dict such as {{'CPU': 4}}"[:300])
        for key, amount in bundle.items():
            if not isinstance(key, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                    or amount < 0:
                raise ValueError(f"request_resources: bundles[{i}] asks {key!r}: {amount!r}; amounts are numbers "
                                 f"of 0 or more (memory in bytes)")
        shape = shape_of({str(k): float(v) for k, v in bundle.items()})
        if shape:
            counts[shape] = counts.get(shape, 0) + 1
    return list(counts.items())


def request_resources(num_cpus: int | None = None, bundles: list[dict] | None = None) -> None:
    """Ask the autoscaler to scale the cluster to at least `num_cpus` CPUs and room for `bundles`
    (each a dict such as {"CPU": 4, "GPU": 1}, packed as one unit), right away, before the tasks
    that need them are submitted. Replaces the previous request; with nothing, clears it."""
    from ..api import _get_client
    request = bundles_of(num_cpus, bundles)
    client = _get_client()
    client.request_head(lambda req: P.request_resources(req, request))
    client.requested_resources = request        # re-sent to a restarted head (recovery.py)
