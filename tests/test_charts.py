"""The Helm charts (charts/tasuki-operator, charts/tasuki-cluster), with the real helm (tests/kubectl.py).

- `helm lint --strict` passes; `helm template` renders with the default values and with the cases
  below (namespaced, all namespaces, Prometheus Operator objects on; a CPU + GPU autoscaling Cluster).
- Every built-in object rendered validates against the real Kubernetes schemas (kubernetes-validate,
  strict) for each version 1.29..1.37, the range the CRD and manifest tests promise; the Cluster is
  validated with jsonschema against the CRD's own schema and by the operator's validate_spec.
- The rendered objects say what they should: RBAC = operator/tasuki_operator/rbac.yaml's rules, a Role
  per watched namespace or a ClusterRole, the Lease rules only in the operator's namespace; the
  Deployment's arguments parse as tasuki-operator's; probes, restricted securityContext, scrape
  annotations, monitors that select what the operator makes, one dashboard ConfigMap per JSON file;
  a GPU group's pods (built by the operator from the rendered Cluster) with nvidia.com/gpu and /dev/shm.
- A wrong value fails `helm template` with its path (values.schema.json).
- Install smoke test: the rendered charts applied with kubectl to the Kubernetes emulation, then the
  operator started with the Deployment's own arguments reconciles the chart's Cluster, and every
  request it made is allowed by the Roles the chart rendered.

Helm itself cannot `helm install` against the emulation: helm 4 stores its release Secret as protobuf,
which the emulation does not decode; hence `helm template | kubectl apply`.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from conftest import free_port, operator_healthy, wait_until
from kube_emulator import KubeEmulator
from kubectl import HELM_MISSING, MISSING, helm_path, kubectl_path
from tasuki_operator import manifests, rbac
from tasuki_operator.main import parse_args
from tasuki_operator.spec import CRD_PATH, cluster_schema, load_crd, to_json_schema, validate_spec

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
OPERATOR, CLUSTER = CHARTS / "tasuki-operator", CHARTS / "tasuki-cluster"
GPU_VALUES = CLUSTER / "examples" / "gpu-autoscaling.yaml"
RELEASE, NAMESPACE = "tasuki-operator", "tasuki-system"
KUBE_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]
JOB_CRD_PATH = ROOT / "operator" / "tasuki_operator" / "job_crd.yaml"
MONITORING = ("--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
              "--set", "prometheusRule.enabled=true")
OPERATOR_CASES = {
    "default": (),
    "namespaced": ("--set", "replicas=2", "--set", "watchNamespaces={ml,research}", *MONITORING),
    "all-namespaces": ("--set", "watchAllNamespaces=true", "--set", "replicas=3", *MONITORING),
}
CLUSTER_CASES = {"default": (), "gpu-autoscaling": ("-f", str(GPU_VALUES))}
DASHBOARD_LABEL = "grafana_dashboard"
WATCH_RULES = [r for r in rbac.load_rules() if "leases" not in r["resources"]]
LEASE_RULES = [r for r in rbac.load_rules() if "leases" in r["resources"]]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = helm_path()
    assert binary, HELM_MISSING           # fails, not skips: the test setup installs helm
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done


@functools.cache
def render(chart: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE) -> tuple[dict, ...]:
    """`helm template` of `chart` with `args`, CRDs included, as objects (cached: do not modify them)."""
    out = helm("template", release, str(chart), "--namespace", namespace, "--include-crds", *args).stdout
    return tuple(o for o in yaml.safe_load_all(out) if o)


def operator_case(case: str) -> tuple[dict, ...]:
    return render(OPERATOR, *OPERATOR_CASES[case])


def of_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind: str) -> dict:
    (obj,) = of_kind(objects, kind)
    return obj


def container(objects) -> dict:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def rendered_cluster(case: str, *args: str) -> dict:
    (cluster,) = render(CLUSTER, *CLUSTER_CASES[case], *args, release="demo", namespace="ml")
    return cluster


def served(cluster: dict) -> dict:
    """The rendered Cluster as the API server would return it (with a uid), for the operator's builders."""
    return {**cluster, "metadata": {**cluster["metadata"], "uid": "0b4e7e55-0000-4000-8000-000000000001"}}


# --- lint, kubeVersion, the derived schema ----------------------------------------------------------

@pytest.mark.parametrize("chart, values", [(OPERATOR, None), (CLUSTER, None), (CLUSTER, GPU_VALUES)],
                         ids=["tasuki-operator", "tasuki-cluster", "tasuki-cluster-gpu"])
def test_helm_lint_strict(chart, values):
    out = helm("lint", "--strict", str(chart), *(["-f", str(values)] if values else [])).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("chart", [OPERATOR, CLUSTER], ids=lambda c: c.name)
def test_kubernetes_before_1_29_is_refused(chart):
    done = helm("template", "x", str(chart), "--kube-version", "1.28.0", check=False)
    assert done.returncode != 0 and "kubeVersion" in done.stderr, done.stderr


def test_cluster_values_schema_is_derived_from_the_crd():
    spec = importlib.util.spec_from_file_location("cluster_values_schema", CHARTS / "cluster_values_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SCHEMA_PATH == CLUSTER / "values.schema.json"
    assert module.SCHEMA_PATH.read_text() == module.render(), \
        "charts/tasuki-cluster/values.schema.json is stale: run python charts/cluster_values_schema.py"


def test_operator_values_and_schema_name_the_same_fields():
    values = yaml.safe_load((OPERATOR / "values.yaml").read_text())
    schema = json.loads((OPERATOR / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"])


def test_every_top_level_value_is_documented():
    for chart in (OPERATOR, CLUSTER):
        lines = (chart / "values.yaml").read_text().splitlines()
        undocumented = [line.split(":")[0] for i, line in enumerate(lines)
                        if line[:1].isalpha() and not lines[i - 1].startswith("#")]
        assert not undocumented, f"{chart.name}/values.yaml: no comment above {undocumented}"


# --- the CRD and rbac.yaml are the operator's own files ------------------------------------------

def test_the_crd_and_the_rules_are_the_operators_files_also_when_packaged(tmp_path):
    assert (OPERATOR / "crds" / "clusters.tasuki.dev.yaml").resolve() == CRD_PATH.resolve()
    assert (OPERATOR / "crds" / "jobs.tasuki.dev.yaml").resolve() == JOB_CRD_PATH.resolve()
    assert (OPERATOR / "files" / "rbac.yaml").resolve() == rbac.RBAC_PATH.resolve()
    assert of_kind(operator_case("default"), "CustomResourceDefinition") == \
        [load_crd(), yaml.safe_load(JOB_CRD_PATH.read_text())]
    helm("package", str(OPERATOR), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("tasuki-operator-*.tgz")
    with tarfile.open(package) as tar:                   # helm packages the linked files' contents
        assert tar.extractfile("tasuki-operator/crds/clusters.tasuki.dev.yaml").read() == CRD_PATH.read_bytes()
        assert tar.extractfile("tasuki-operator/crds/jobs.tasuki.dev.yaml").read() == JOB_CRD_PATH.read_bytes()
        assert tar.extractfile("tasuki-operator/files/rbac.yaml").read() == rbac.RBAC_PATH.read_bytes()


# --- every built-in object against the real schemas ----------------------------------------------

def test_kubernetes_validate_has_the_versions_we_promise():
    shipped = {".".join(v.split(".")[:2]) for v in all_versions()}
    assert set(KUBE_VERSIONS) <= shipped


def builtin_objects() -> list[dict]:
    """Every built-in object of every case, and the pods and Service the operator makes of each
    rendered Cluster (what the chart's values become)."""
    objects = [o for case in OPERATOR_CASES for o in operator_case(case)]
    for case in CLUSTER_CASES:
        cluster = served(rendered_cluster(case))
        objects += [manifests.head_pod(cluster), manifests.head_service(cluster)]
        objects += [manifests.worker_pod(cluster, g["name"], f"demo-{g['name']}-x")
                    for g in cluster["spec"]["workerGroups"]]
    return [o for o in objects if o["apiVersion"].split("/")[0] not in ("tasuki.dev", "monitoring.coreos.com")]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_builtin_objects_validate_strict(version):
    objects = builtin_objects()
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                     "ClusterRoleBinding", "Deployment", "Service", "ConfigMap", "Pod"}, kinds
    for obj in objects:
        assert kubernetes_validate.validate(obj, version, strict=True) == version, obj["metadata"]["name"]


@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_the_cluster_validates_against_the_crd_and_the_operator(case):
    cluster = rendered_cluster(case)
    validator = jsonschema.Draft202012Validator(to_json_schema(cluster_schema()))
    assert [e.message for e in validator.iter_errors(cluster)] == []
    assert validate_spec(cluster["spec"], cluster["metadata"]["name"]) == []
    assert cluster["metadata"]["namespace"] == "ml" and cluster["metadata"]["name"] == "demo"


# --- RBAC -------------------------------------------------------------------------------------------

def rules_of(objects, kind: str, namespace: str | None = None, name_suffix: str = "") -> list[list[dict]]:
    return [o["rules"] for o in of_kind(objects, kind) if o["metadata"].get("namespace") == namespace
            and o["metadata"]["name"].endswith(name_suffix)]


def assert_bound(objects, role: dict) -> None:
    """A binding of the same kind and namespace grants `role` to the operator's ServiceAccount."""
    binding_kind = role["kind"] + "Binding"
    namespace = role["metadata"].get("namespace")
    (binding,) = [b for b in of_kind(objects, binding_kind) if b["metadata"].get("namespace") == namespace
                  and b["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"],
                                  "name": role["metadata"]["name"]}
    account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


def test_default_rbac_is_one_role_in_the_release_namespace():
    objects = operator_case("default")
    (role,) = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE and role["rules"] == WATCH_RULES
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    assert_bound(objects, role)


def test_a_role_per_watched_namespace_and_the_lease_only_in_the_operators():
    objects = operator_case("namespaced")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(objects, "Role")}
    assert set(roles) == {("ml", RELEASE), ("research", RELEASE), (NAMESPACE, f"{RELEASE}-leader")}
    assert roles["ml", RELEASE]["rules"] == roles["research", RELEASE]["rules"] == WATCH_RULES
    assert roles[NAMESPACE, f"{RELEASE}-leader"]["rules"] == LEASE_RULES
    assert WATCH_RULES + LEASE_RULES == sorted(rbac.load_rules(), key=lambda r: "leases" in r["resources"])
    for role in roles.values():
        assert_bound(objects, role)
    assert not of_kind(objects, "ClusterRole")


def test_all_namespaces_is_a_cluster_role_and_the_lease_stays_namespaced():
    objects = operator_case("all-namespaces")
    cluster_role = one(objects, "ClusterRole")
    assert cluster_role["rules"] == WATCH_RULES
    assert_bound(objects, cluster_role)
    (role,) = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE and role["rules"] == LEASE_RULES
    assert_bound(objects, role)


def test_no_wildcard_and_no_rights_on_rbac_objects():
    for case in OPERATOR_CASES:
        for obj in of_kind(operator_case(case), "Role") + of_kind(operator_case(case), "ClusterRole"):
            for rule in obj["rules"]:
                assert not any("*" in v for values in rule.values() for v in values), (case, rule)
                assert "rbac.authorization.k8s.io" not in rule["apiGroups"], (case, rule)


# --- the Deployment -------------------------------------------------------------------------------

@pytest.mark.parametrize("case, namespaces, standalone", [
    ("default", [NAMESPACE], True), ("namespaced", ["ml", "research"], False), ("all-namespaces", [], False)])
def test_the_arguments_are_tasuki_operators(case, namespaces, standalone):
    objects = operator_case(case)
    args = parse_args(container(objects)["args"])
    assert args.namespace == namespaces and args.standalone is standalone
    assert args.metrics_port == 8080 and args.log_level == "INFO"
    replicas = one(objects, "Deployment")["spec"]["replicas"]
    assert (replicas == 1) is standalone


def test_pod_name_and_namespace_come_from_the_downward_api():
    env = {e["name"]: e for e in container(operator_case("default"))["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_probes_resources_and_the_metrics_service():
    objects = operator_case("default")
    c = container(objects)
    (port,) = c["ports"]
    assert port == {"name": "metrics", "containerPort": 8080, "protocol": "TCP"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_restricted_security_context():
    objects = operator_case("default")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(objects)["volumeMounts"]   # read-only root


# --- metrics: scrape annotations, monitors, rules, dashboards --------------------------------------

def test_scrape_annotations_on_the_operator_and_the_heads():
    annotations = one(operator_case("default"), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                           "prometheus.io/path": "/metrics"}
    head = manifests.head_pod(served(rendered_cluster("default")))["metadata"]["annotations"]
    assert head["prometheus.io/scrape"] == "true" and head["prometheus.io/port"] == "8080"
    quiet = manifests.head_pod(served(rendered_cluster("default", "--set", "metrics.scrapeAnnotations=false")))
    assert "prometheus.io/scrape" not in (quiet["metadata"].get("annotations") or {})


def test_prometheus_operator_objects_are_off_by_default():
    assert not [o for o in operator_case("default") if o["apiVersion"].startswith("monitoring.coreos.com/")]


def test_the_service_monitor_scrapes_the_metrics_service():
    objects = operator_case("namespaced")
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True       # the operator's own namespace/cluster labels are kept


@pytest.mark.parametrize("case, selector", [("namespaced", {"matchNames": ["ml", "research"]}),
                                            ("all-namespaces", {"any": True})])
def test_the_pod_monitor_scrapes_every_head_the_operator_makes(case, selector):
    monitor = one(operator_case(case), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == selector
    cluster = served(rendered_cluster("gpu-autoscaling"))
    head = manifests.head_pod(cluster)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= head["metadata"]["labels"].items()
    worker = manifests.worker_pod(cluster, "cpu", "demo-cpu-x")
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= worker["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (head_container,) = head["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in head_container["ports"]} and endpoint["path"] == "/metrics"


def test_the_prometheus_rule_holds_the_rules_file():
    rule = one(operator_case("namespaced"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((OPERATOR / "rules" / "tasuki-alerts.yaml").read_text())["groups"]


def test_every_dashboard_file_is_one_configmap_for_the_grafana_sidecar():
    files = sorted((OPERATOR / "dashboards").glob("*.json"))
    assert files
    maps = [o for o in operator_case("default") if o["kind"] == "ConfigMap"]
    assert len(maps) == len(files)
    by_file = {}
    for cm in maps:
        assert cm["metadata"]["labels"][DASHBOARD_LABEL] == "1"
        (key,) = cm["data"]
        by_file[key] = json.loads(cm["data"][key])
    assert by_file == {f.name: json.loads(f.read_text()) for f in files}


def test_dashboards_can_go_elsewhere_or_be_left_out():
    moved = of_kind(render(OPERATOR, "--set", "dashboards.namespace=monitoring"), "ConfigMap")
    assert moved and all(cm["metadata"]["namespace"] == "monitoring" for cm in moved)
    assert not of_kind(render(OPERATOR, "--set", "dashboards.enabled=false"), "ConfigMap")


# --- the Cluster: GPU groups, /dev/shm ------------------------------------------------------------

def test_gpu_group_pods_get_gpus_and_every_pod_its_dev_shm():
    cluster = served(rendered_cluster("gpu-autoscaling"))
    assert [g["name"] for g in cluster["spec"]["workerGroups"]] == ["cpu", "gpu"]
    assert cluster["spec"]["autoscaler"]["mode"] == "Auto"
    for group, gpus in (("cpu", None), ("gpu", "1")):
        pod = manifests.worker_pod(cluster, group, f"demo-{group}-x")
        (c,) = pod["spec"]["containers"]
        assert c["resources"]["limits"].get("nvidia.com/gpu") == gpus
        (shm,) = [v for v in pod["spec"]["volumes"] if v["name"] == manifests.SHM_VOLUME]
        assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]
        assert {"name": manifests.SHM_VOLUME, "mountPath": manifests.SHM_DIR} in c["volumeMounts"]


def test_the_cluster_name_is_the_release_name_unless_set():
    assert rendered_cluster("default", "--set", "name=analytics")["metadata"]["name"] == "analytics"
    done = helm("template", "a" * 51, str(CLUSTER), check=False)
    assert done.returncode != 0 and "at most 50 characters" in done.stderr and "set `name`" in done.stderr


# --- wrong values fail at helm template / install ------------------------------------------------

BAD_VALUES = [
    # chart, helm arguments, what the error must say
    (OPERATOR, ["--set", "replicas=two"], "at '/replicas': got string, want integer"),
    (OPERATOR, ["--set", "replica=2"], "additional properties 'replica' not allowed"),
    (OPERATOR, ["--set", "logLevel=LOUD"], "at '/logLevel'"),
    (OPERATOR, ["--set", "watchNamespaces={ML}"], "at '/watchNamespaces/0'"),
    (OPERATOR, ["--set", "securityContext.allowPrivilegeEscalation=true"],
     "at '/securityContext/allowPrivilegeEscalation'"),
    (OPERATOR, ["--set", "resources.limits.memory=lots"], "at '/resources/limits/memory'"),
    (OPERATOR, ["--set", "serviceMonitor.enabled=yes"], "at '/serviceMonitor/enabled': got string, want boolean"),
    (OPERATOR, ["--set", "watchAllNamespaces=true", "--set", "watchNamespaces={ml}"],
     "watchAllNamespaces is true and watchNamespaces lists ml"),
    (CLUSTER, ["--set", "workers=3"], "additional properties 'workers' not allowed"),
    (CLUSTER, ["--set", "head.resources.limits.memory=lots"], "at '/head/resources/limits/memory'"),
    (CLUSTER, ["--set-json", 'workerGroups=[{"name": "cpu", "replicas": -1}]'], "at '/workerGroups/0/replicas'"),
    (CLUSTER, ["--set-json", 'workerGroups=[{"name": "head"}]'], None),       # the CEL rule: see the test
    (CLUSTER, ["--set", "autoscaler.mode=Sometimes"], "at '/autoscaler/mode'"),
    (CLUSTER, ["--set", "name=Demo"], "at '/name'"),
    (CLUSTER, ["--set", "image="], "at '/image'"),
]


@pytest.mark.parametrize("chart, args, says", BAD_VALUES,
                         ids=[f"{c.name}:{' '.join(a)}" for c, a, _ in BAD_VALUES])
def test_a_wrong_value_fails_with_its_path(chart, args, says):
    done = helm("template", "demo", str(chart), *args, check=False)
    if says is None:     # JSON Schema cannot say a CEL rule: the API server and the operator refuse it
        assert done.returncode == 0
        (cluster,) = [o for o in yaml.safe_load_all(done.stdout) if o]
        assert [e.path for e in validate_spec(cluster["spec"], "demo")] == ["spec.workerGroups[0].name"]
        return
    assert done.returncode != 0, f"helm accepted {args}"
    assert says in done.stderr, done.stderr


def test_a_bare_off_is_refused_not_read_as_false(tmp_path):
    values = tmp_path / "off.yaml"
    values.write_text("autoscaler:\n  mode: Off\n")                     # YAML 1.1: the boolean false
    done = helm("template", "demo", str(CLUSTER), "-f", str(values), check=False)
    assert done.returncode != 0 and "at '/autoscaler/mode': got boolean, want string" in done.stderr
    values.write_text('autoscaler:\n  mode: "Off"\n')
    assert helm("template", "demo", str(CLUSTER), "-f", str(values)).returncode == 0


# --- install smoke test: kubectl apply to the emulation, then the operator with the chart's args ----

def test_install_then_the_operator_runs_with_the_charts_arguments_and_roles(tmp_path):
    binary = kubectl_path()
    assert binary, MISSING
    operator_args = ("--set", "watchNamespaces={ml}", "--set", "replicas=2")      # leader election, too
    with KubeEmulator() as kube:
        env = {**os.environ, "KUBECONFIG": kube.kubeconfig_path}

        def apply(*template_args: str) -> str:
            manifest = helm("template", *template_args, "--include-crds").stdout
            done = subprocess.run([binary, "apply", "--validate=false", "-f", "-"], input=manifest, env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        applied = apply(RELEASE, str(OPERATOR), "-n", NAMESPACE, *operator_args)
        assert "customresourcedefinition.apiextensions.k8s.io/clusters.tasuki.dev created" in applied
        assert "customresourcedefinition.apiextensions.k8s.io/jobs.tasuki.dev created" in applied
        assert kube.get("deployments", RELEASE, NAMESPACE) and kube.get("serviceaccounts", RELEASE, NAMESPACE)
        assert kube.get("roles", RELEASE, "ml") and kube.get("rolebindings", RELEASE, "ml")
        assert kube.get("services", f"{RELEASE}-metrics", NAMESPACE)
        assert kube.list("configmaps", NAMESPACE, label_selector=f"{DASHBOARD_LABEL}=1")
        assert "cluster.tasuki.dev/demo created" in apply("demo", str(CLUSTER), "-n", "ml", "-f", str(GPU_VALUES))

        # The operator as the Deployment runs it (its args, POD_NAMESPACE), the metrics port moved to a
        # free one and a kubeconfig added, since it runs here rather than in a pod.
        args = container(render(OPERATOR, *operator_args))["args"]
        port = free_port()
        log = tmp_path / "operator.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tasuki_operator.main", *args, "--kubeconfig", kube.kubeconfig_path,
                 "--metrics-host", "127.0.0.1", f"--metrics-port={port}", "--head-url", "http://127.0.0.1:9"],
                stdout=out, stderr=subprocess.STDOUT, env={**env, "POD_NAMESPACE": NAMESPACE, "POD_NAME": "op-0"})
        try:
            wait_until(lambda: operator_healthy(proc, port, log.read_text), 60, "the operator's /healthz")
            wait_until(lambda: kube.get("pods", "demo-head", "ml") and kube.get("secrets", "demo-token", "ml"),
                       60, "the head pod and token Secret of the chart's Cluster")
        finally:
            proc.terminate()
            proc.wait(30)
        roles = {r["metadata"]["namespace"]: r["rules"] for r in of_kind(render(OPERATOR, *operator_args), "Role")}
        ops = [a for a in kube.audit if not a["agent"].startswith("kubectl")]       # kubectl is the user
        assert {"verb": "create", "resource": "pods", "namespace": "ml"}.items() <= \
            next(a for a in ops if a["verb"] == "create" and a["resource"] == "pods").items()
        assert {(a["verb"], a["namespace"]) for a in ops if a["resource"] == "leases"} >= {("create", NAMESPACE)}
        denied = sorted({(a["verb"], a["apiGroup"], a["resource"], a.get("subresource") or "", a.get("namespace") or "")
                         for a in ops if not rbac.allows(roles.get(a.get("namespace"), []), a["verb"], a["apiGroup"],
                                                         a["resource"], a.get("subresource"), a.get("name"))})
        assert not denied, f"requests the chart's Roles do not allow (verb, group, resource, sub, namespace): {denied}"
