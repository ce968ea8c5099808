"""What the e2e scenarios watch of a Cluster's pods (test_scenarios.py, test_jobs.py): readiness,
the pods of a group as they come and go, and a one-line description for failure messages."""
from __future__ import annotations

import contextlib
import threading
import time

from e2e.platform import Platform

POD_START_S = 180            # a pod created -> its container Ready, on a loaded machine
GROUP = "tasuki.dev/group"


def resources(cpu: str, memory: str, gpus: int = 0) -> dict:
    amounts = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", ()))


def live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Failed", "Succeeded")]


class PodWatch:
    """Polls the Cluster's pods in a thread: when each was first seen, first Ready, gone; the most
    live pods of each group seen at once."""

    def __init__(self, platform: Platform, cluster: str, interval: float = 1.0) -> None:
        self.platform, self.cluster, self.interval = platform, cluster, interval
        self.seen: dict[str, dict] = {}           # pod name -> {"group", "created", "ready", "gone"}
        self.most: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pod-watch")

    def __enter__(self) -> "PodWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.observe(self.platform.cluster_pods(self.cluster), time.time())     # what started since the last poll

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.observe(self.platform.cluster_pods(self.cluster), time.time())
            self._stop.wait(self.interval)

    def observe(self, pods: list[dict], now: float) -> None:
        names = set()
        for pod in pods:
            name, group = pod["metadata"]["name"], pod["metadata"]["labels"].get(GROUP, "?")
            names.add(name)
            entry = self.seen.setdefault(name, {"group": group, "created": now, "ready": None, "gone": None})
            if entry["ready"] is None and is_ready(pod):
                entry["ready"] = now
        for name, entry in self.seen.items():
            if name not in names and entry["gone"] is None:
                entry["gone"] = now
        counts: dict[str, int] = {}
        for pod in live(pods):
            group = pod["metadata"]["labels"].get(GROUP, "?")
            counts[group] = counts.get(group, 0) + 1
        for group, n in counts.items():
            self.most[group] = max(self.most.get(group, 0), n)

    def of_group(self, group: str) -> dict[str, dict]:
        return {n: e for n, e in self.seen.items() if e["group"] == group}


def describe_pods(platform: Platform, cluster: str) -> str:
    return ", ".join(f"{p['metadata']['name']}={p.get('status', {}).get('phase')}"
                     f"{'(deleting)' if p['metadata'].get('deletionTimestamp') else ''}"
                     for p in platform.cluster_pods(cluster)) or "no pods"
