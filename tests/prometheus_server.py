"""A Prometheus of our own for the tests and the e2e suite, scraping what the chart says to scrape, and
the Grafana dashboards' panels run against it.

Who calls it: tests/test_monitoring.py (a CLI cluster and the operator, scraped by static targets),
tests/test_prometheus_server.py, and e2e scenario 8 (the operator and the head pods of a live run).

    charts/tasuki-operator ──helm template──► ServiceMonitor, PodMonitor, Service (plain dicts)
        scrape_configs(objects, heads, operator_address)           (pure: what the Prometheus Operator
          ─► [{job_name, static_configs: [{targets, labels: __meta_kubernetes_*}],   would generate from
               relabel_configs: the selectors, namespace/pod/job/endpoint, the chart's relabelings}]   them)
    Prometheus(command, directory, scrape_configs) ─► a prometheus process (Debian's 2.42), 127.0.0.1:free port
    panel_results(prometheus, dashboards_dir, values) ─► {"<dashboard>: <panel>": {refId: series | error}}

No Prometheus Operator and no kubernetes_sd run here: each target is given as a static target whose
labels are the `__meta_kubernetes_*` labels Kubernetes service discovery would give it (its pod's
namespace, name and labels, the port's name), and Prometheus itself applies the relabelings, so the
chart's selectors and relabelings are what decide the job and the labels the dashboards filter on. A
chart change that drops a label or stops selecting the heads shows up as a missing label or target.

The dashboard helpers (`load`, `panels`, `queries`, `fill`, `metric_names`, `unknown_metrics`) are
pure functions over the dashboards' JSON and PromQL text.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "tasuki-operator"
DASHBOARDS_DIR = CHART / "dashboards"
RULES = CHART / "rules" / "tasuki-alerts.yaml"
SCRAPE_INTERVAL = "1s"              # the tests' scrape and rule interval: rates need two scrapes in a window
WAIT_S = 60.0                       # the longest a wait for a scrape or a target may take
SKIP_PROMETHEUS = os.environ.get("TASUKI_SKIP_PROMETHEUS") == "1"     # read now: cli_cluster clears TASUKI_*
# PromQL words that are neither metrics nor functions (a function is a word followed by "(").
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}
META = "__meta_kubernetes_"


def tool(name: str) -> str:
    """The path of `name` (prometheus, promtool); fails the test (skips it under TASUKI_SKIP_PROMETHEUS=1)
    when it is not installed."""
    import pytest
    path = shutil.which(name)
    if path:
        return path
    if SKIP_PROMETHEUS:
        pytest.skip(f"{name} is not installed and TASUKI_SKIP_PROMETHEUS=1")
    pytest.fail(f"{name} is not on PATH: run .ci/setup-prometheus.sh (Debian's prometheus package, with promtool), "
                f"or set TASUKI_SKIP_PROMETHEUS=1 to skip the monitoring tests")


# --- reading dashboards and PromQL (pure) -------------------------------------------------------------
def load(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def panels(board: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def queries(board: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of the dashboard."""
    return [(p["title"], t["refId"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def panel_queries(board: dict, name: str) -> list[tuple[str, str, str]]:
    """(key, refId, expr) of every query, the key "<name>: <panel title>", with " (panel <id>)" added
    where a title repeats in the dashboard (a stat and a graph of the same thing)."""
    titles = [p["title"] for p in panels(board) if p.get("targets")]
    return [(f"{name}: {p['title']}" + (f" (panel {p['id']})" if titles.count(p["title"]) > 1 else ""),
             t["refId"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def says_when_empty(board: dict, name: str) -> set[str]:
    """The keys (as panel_queries makes them) of the panels that show their own text instead of
    Grafana's "No data" when their queries return nothing (fieldConfig.defaults.noValue)."""
    return {key for (key, _, _), panel in zip(panel_queries(board, name),
                                               [p for p in panels(board) for _ in p.get("targets", [])])
            if panel.get("fieldConfig", {}).get("defaults", {}).get("noValue")}


def fill(expr: str, values: Mapping[str, str]) -> str:
    """The query as Grafana sends it: $name and ${name} replaced by `values`; an unknown variable is an error."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"the query {expr!r} uses ${name}, which is not a variable of the dashboards "
                           f"(known: {', '.join(sorted(values))})")
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)              # strings
    text = re.sub(r"\{[^}]*\}", " ", text)                         # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                        # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() not in PROMQL_WORDS and not text[match.end():].lstrip().startswith("("):
            names.add(word)
    return names


def unknown_metrics(where: str, expr: str, known: set[str]) -> str | None:
    """A message naming `where` and each metric of `expr` that no scraped target exports, or None."""
    missing = sorted(metric_names(expr) - known)
    if not missing:
        return None
    exported = sorted(n for n in known if n.startswith("tasuki_") and not n.endswith("_created"))
    return (f"{where} names {', '.join(missing)}, which no scraped target exports (a typo, or a metric the "
            f"runtime or operator does not have); the tasuki metrics scraped: {', '.join(exported)}")


def empty_panels(results: Mapping[str, Mapping[str, list | str]]) -> list[str]:
    """One line for each query of `panel_results` that returned no series or failed (pure)."""
    out = []
    for panel, by_ref in results.items():
        for ref, result in by_ref.items():
            if isinstance(result, str):
                out.append(f"{panel} ({ref}): {result}")
            elif not result:
                out.append(f"{panel} ({ref}) returned no series")
    return out


# --- the chart's scrape configuration (pure) ----------------------------------------------------------
def meta_name(key: str) -> str:
    """A Kubernetes label key as Prometheus's service discovery names it: tasuki.dev/role -> tasuki_dev_role."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _relabel(rule: Mapping) -> dict:
    """A Prometheus Operator relabeling (sourceLabels, targetLabel, ...) as Prometheus's relabel_config."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(k, k): v for k, v in rule.items()}


def _selected(kind: str, match_labels: Mapping[str, str]) -> list[dict]:
    """Keep only targets whose pod (or service) carries every matchLabels label, as the operator does."""
    return [{"action": "keep", "source_labels": [f"{META}{kind}_label_{meta_name(k)}",
                                                f"{META}{kind}_labelpresent_{meta_name(k)}"],
             "regex": f"({re.escape(v)});true"} for k, v in sorted(match_labels.items())]


def _namespaces(selector: Mapping, own: str) -> list[dict]:
    if selector.get("any"):
        return []
    names = selector.get("matchNames") or [own]
    return [{"action": "keep", "source_labels": [f"{META}namespace"], "regex": "|".join(map(re.escape, names))}]


def _pod_meta(pod: Mapping, port_name: str) -> dict[str, str]:
    """The __meta_kubernetes_* labels that pod service discovery gives the target of `pod`'s port `port_name`."""
    meta, labels = pod["metadata"], pod["metadata"].get("labels") or {}
    container = next((c for c in pod["spec"]["containers"] if any(p.get("name") == port_name
                                                                  for p in c.get("ports") or [])), None)
    out = {f"{META}namespace": meta["namespace"], f"{META}pod_name": meta["name"],
           f"{META}pod_container_name": container["name"] if container else "",
           f"{META}pod_container_port_name": port_name if container else ""}
    for key, value in labels.items():
        out[f"{META}pod_label_{meta_name(key)}"] = value
        out[f"{META}pod_labelpresent_{meta_name(key)}"] = "true"
    return out


def _pod_address(pod: Mapping, port_name: str) -> str:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise ValueError(f"pod {pod['metadata']['name']} has no status.podIP: give the pod as the cluster has it "
                         f"(kubectl get pod -o json), with the address its metrics port listens on")
    for c in pod["spec"]["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == port_name:
                return f"{ip}:{p['containerPort']}"
    raise ValueError(f"pod {pod['metadata']['name']} has no container port named {port_name!r}, the port the "
                     f"chart's PodMonitor scrapes")


def scrape_configs(objects: Iterable[Mapping], heads: Iterable[Mapping], operator_address: str | None,
                   interval: str | None = None) -> list[dict]:
    """Prometheus scrape_configs for the rendered chart `objects`' PodMonitor (over the head pods `heads`,
    Pod dicts with status.podIP) and ServiceMonitor (over the operator's metrics Service, reached at
    `operator_address`, host:port), as the Prometheus Operator would generate them, with static targets.
    `interval` replaces the chart's scrape intervals (a test scrapes every second). Pure."""
    objects = list(objects)
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    configs = []
    for monitor in by_kind.get("PodMonitor", []):
        meta, spec = monitor["metadata"], monitor["spec"]
        for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
            port = endpoint["port"]
            relabel = (_namespaces(spec.get("namespaceSelector") or {}, meta["namespace"])
                       + _selected("pod", spec["selector"].get("matchLabels") or {})
                       + [{"action": "keep", "source_labels": [f"{META}pod_container_port_name"],
                           "regex": re.escape(port)},
                          {"source_labels": [f"{META}namespace"], "target_label": "namespace"},
                          {"source_labels": [f"{META}pod_container_name"], "target_label": "container"},
                          {"source_labels": [f"{META}pod_name"], "target_label": "pod"},
                          {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
                          {"target_label": "endpoint", "replacement": port}]
                       + [_relabel(r) for r in endpoint.get("relabelings") or []])
            configs.append({
                "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{i}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "scrape_interval": interval or endpoint.get("interval", "30s"),
                "static_configs": [{"targets": [_pod_address(pod, port)], "labels": _pod_meta(pod, port)}
                                   for pod in heads],
                "relabel_configs": relabel})
    for monitor in by_kind.get("ServiceMonitor", []):
        meta, spec = monitor["metadata"], monitor["spec"]
        services = [s for s in by_kind.get("Service", [])
                    if s["metadata"].get("namespace", meta["namespace"]) == meta["namespace"]]
        for i, endpoint in enumerate(spec["endpoints"]):
            port = endpoint["port"]
            relabel = (_namespaces(spec.get("namespaceSelector") or {}, meta["namespace"])
                       + _selected("service", spec["selector"].get("matchLabels") or {})
                       + [{"action": "keep", "source_labels": [f"{META}endpoint_port_name"], "regex": re.escape(port)},
                          {"source_labels": [f"{META}namespace"], "target_label": "namespace"},
                          {"source_labels": [f"{META}service_name"], "target_label": "service"},
                          {"source_labels": [f"{META}service_name"], "target_label": "job"},
                          {"target_label": "endpoint", "replacement": port}]
                       + [_relabel(r) for r in endpoint.get("relabelings") or []])
            targets = []
            for service in services if operator_address else []:
                labels = {f"{META}namespace": service["metadata"].get("namespace", meta["namespace"]),
                          f"{META}service_name": service["metadata"]["name"]}
                for key, value in (service["metadata"].get("labels") or {}).items():
                    labels[f"{META}service_label_{meta_name(key)}"] = value
                    labels[f"{META}service_labelpresent_{meta_name(key)}"] = "true"
                for service_port in service["spec"]["ports"]:
                    targets.append({"targets": [operator_address],
                                    "labels": {**labels, f"{META}endpoint_port_name": service_port.get("name", "")}})
            configs.append({
                "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "scrape_interval": interval or endpoint.get("interval", "30s"),
                "static_configs": targets,
                "relabel_configs": relabel})
    return configs


def render_chart(*helm_args: str, release: str = "tasuki", namespace: str = "tasuki-system") -> tuple[dict, ...]:
    """charts/tasuki-operator rendered by `helm template` with its ServiceMonitor and PodMonitor on, and
    `helm_args` (e.g. "--set", "watchNamespaces={ml}") after them."""
    from test_charts import render
    return render(CHART, "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true", *helm_args,
                  release=release, namespace=namespace)


def scrape_config_from_chart(heads: Iterable[Mapping], operator_address: str | None, *helm_args: str,
                             release: str = "tasuki", namespace: str = "tasuki-system",
                             interval: str | None = SCRAPE_INTERVAL) -> list[dict]:
    """The scrape_configs the chart's ServiceMonitor and PodMonitor describe (rendered now with helm, so a
    chart change shows), for the head pods `heads` (Pod dicts with status.podIP) and the operator's
    metrics at `operator_address` (host:port, None: not scraped). `helm_args`, `release` and `namespace`
    as the chart was installed (the PodMonitor's namespaceSelector follows watchNamespaces)."""
    return scrape_configs(render_chart(*helm_args, release=release, namespace=namespace), heads,
                          operator_address, interval)


# --- a real Prometheus --------------------------------------------------------------------------------
class Prometheus:
    """A prometheus process of our own (started here; wait for `ready`, then `stop` it): a temporary config
    and data directory, a free port on 127.0.0.1, the chart's alert rules loaded, `scrape_configs` (each
    with its job_name) scraped."""

    def __init__(self, command: str, directory: Path, scrape_configs: list[dict],
                 rule_files: Iterable[Path] = (RULES,), interval: str = SCRAPE_INTERVAL) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                  "rule_files": [str(path) for path in rule_files],
                  "scrape_configs": scrape_configs}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [command, f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}:\n{self.logs()}"
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params) -> object:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"prometheus refused {urllib.parse.unquote(url)}: {e.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The one value of `expr` now (None when it has no series)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expected: dict[str, float], timeout: float = WAIT_S) -> None:
        """Wait until each query's one value is the one expected; on a timeout, say what each one was."""
        deadline = time.monotonic() + timeout
        while (found := {expr: self.value(expr) for expr in expected}) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for prometheus to scrape "
                                     f"{expected}; it has {found}")
            time.sleep(0.2)

    def targets(self) -> list[dict]:
        """The active targets: each with `health`, `labels` (after relabeling), `scrapeUrl`, `lastError`."""
        return self.api("targets")["activeTargets"]

    def names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def panel_results(prometheus: Prometheus, dashboards_dir: Path, values: Mapping[str, str]) -> dict[str, dict]:
    """Every query of every panel of the dashboards in `dashboards_dir` (*.json), variables filled from
    `values` (namespace, cluster, __rate_interval, __interval), run against `prometheus` now:
    {"<file>: <panel title>": {refId: its series (a list, empty when none) or why it failed (a str)}}
    (keys as panel_queries makes them). `empty_panels(...)` lists what returned nothing."""
    known, out = prometheus.names(), {}
    for path in sorted(Path(dashboards_dir).glob("*.json")):
        for where, ref, expr in panel_queries(load(path), path.name):
            query = fill(expr, values)
            problem = unknown_metrics("the query", query, known)
            if problem:
                result: list | str = problem
            else:
                try:
                    result = prometheus.query(query)
                except AssertionError as e:          # refused: a PromQL error
                    result = str(e)
            out.setdefault(where, {})[ref] = result
    return out
