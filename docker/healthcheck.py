"""The images' HEALTHCHECK command (exit 0: healthy, 1: not; the reason goes to stdout, which
`docker inspect` shows under State.Health).

    python healthcheck.py          the runtime images: the container's `tasuki start --block`
    python healthcheck.py URL      the operator image: URL (its /healthz) must answer 200

Runtime: `tasuki start` writes its cluster file (tasuki.config.cluster_file(): $TASUKI_TMPDIR, else
/tmp/tasuki-<uid>, then cluster.json) once what it started is up: a worker's node agent has
registered with the head, or the head answers. A worker is healthy while that file is there: the
same test as the operator's worker probes (tasuki_operator.manifests.WORKER_PROBE_SCRIPT), and for
the same reason nothing remote is asked (a restarting head must not make every worker unhealthy).
The head (the file names a head pid) is healthy when its /healthz, on the HTTP port the file
records, answers 200 within TIMEOUT_S: that is the head's loop answering, as the operator's head
probes check. A node agent that dies ends `tasuki start --block` and so the container; no check is
needed for that.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

from tasuki import config

TIMEOUT_S = 4.0          # below the HEALTHCHECK --timeout of the Dockerfiles (5 s)


def get_ok(url: str) -> tuple[bool, str]:
    """(whether GET url answered 200 within TIMEOUT_S, what happened)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            return answer.status == 200, f"{url} answered {answer.status}"
    except urllib.error.HTTPError as e:
        return False, f"{url} answered {e.code}: {e.read(300).decode(errors='replace').strip()}"
    except (OSError, ValueError) as e:
        return False, f"{url} did not answer within {TIMEOUT_S:g} s: {e}"


def runtime_health() -> tuple[bool, str]:
    """(healthy, why) of the `tasuki start --block` in this container, from its cluster file."""
    try:
        info = config.read_cluster_file()
    except config.UnsafePathError as e:
        return False, str(e)
    if not info:
        return False, (f"no cluster file {config.cluster_file()} yet: `tasuki start` has not finished starting "
                       f"(or this container runs something else)")
    if info.get("head_pid") is None:
        return True, f"node agent registered with the head at {info.get('address')}"
    if not info.get("metrics"):
        return False, f"the head (pid {info['head_pid']}) records no HTTP port in {config.cluster_file()}"
    return get_ok(info["metrics"] + "/healthz")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: healthcheck.py [URL], got {' '.join(argv)!r}")
        return 1
    healthy, why = get_ok(argv[0]) if argv else runtime_health()
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
