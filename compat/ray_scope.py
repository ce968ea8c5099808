"""Which of Ray's tests measure what tasuki claims: a classifier by source inspection (pure: text in,
decisions out; no imports of the tests, no Ray).

    classify_source(text) -> {test_name: Decision}      test_name: "test_x" or "TestX::test_x"

A test is out of scope when the code it runs, as far as source shows, uses a feature tasuki does not
claim. What counts as "the code it runs": the test function (its decorators and parameters), the
file-local fixtures it requests (transitively), and the module-level functions, classes and
variables it names (transitively). Names are resolved through the file's imports, so
`list_tasks(...)` after `from ray.util.state import list_tasks` is `ray.util.state.list_tasks`.

RULES below is the whole rule set, in order; the first that matches gives the category. The report
prints it (describe_rules).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# The stand-ins compat/ray_shim provides for Ray's test utilities (ray/_private/test_utils.py, STAND_INS).
STAND_INS = frozenset({"wait_for_condition", "async_wait_for_condition", "SignalActor", "Semaphore",
                       "run_string_as_driver", "run_string_as_driver_nonblocking", "client_test_enabled",
                       "wait_for_pid_to_exit"})
_STAND_IN_MODULES = ("ray._private.test_utils", "ray._common.test_utils")

# Fixtures of Ray's conftest that start something tasuki's shim does not: test clusters of
# ray.cluster_utils, `ray start` on the command line, the dashboard, external Redis, Ray Client.
_CLUSTER_FIXTURE = re.compile(r"^(ray_start_cluster\w*|ray_start_combination|ray_start_workers_separate\w*|"
                              r"call_ray_start\w*|call_ray_stop_only|ray_start_chaos_cluster|"
                              r"ray_start_head_with_\w*|start_cluster|ray_cluster\w*|monkeypatch_start_node)$")

# Fixtures of Ray's conftest that reach into Ray's processes: error pubsub of the GCS, an HTTP proxy
# for gRPC, external Redis, the dashboard.
_INTERNAL_FIXTURES = frozenset({"error_pubsub", "log_pubsub", "start_http_proxy", "external_redis",
                                "maybe_external_redis_with_ports", "ray_start_with_dashboard",
                                "enable_pickle_debug", "set_enable_auto_connect", "fast_health_check"})


@dataclass(frozen=True)
class Decision:
    category: str        # "in_scope" or one of RULES' categories
    reason: str          # what matched, for the report ("ray.util.state.list_tasks")


@dataclass
class _Facts:
    names: set           # qualified dotted names the code uses ("ray.util.state.list_tasks", "ray.get")
    strings: set         # string constants
    keywords: set        # keyword-argument names in calls
    fixtures: set        # fixtures requested (transitively through file-local fixtures)
    remote_yield: bool   # a @ray.remote function or a method of a @ray.remote class yields


def _prefix(names, *prefixes):
    for n in sorted(names):
        for p in prefixes:
            if n == p or n.startswith(p + "."):
                return n
    return None


def _internal(f: _Facts):
    for n in sorted(f.names):
        module = next((m for m in _STAND_IN_MODULES if n == m or n.startswith(m + ".")), None)
        if module:
            if n == module or n[len(module) + 1:].split(".")[0] in STAND_INS:
                continue
            return n
        if n.startswith(("ray._private", "ray._raylet", "ray._common", "ray.core", "ray.experimental",
                         "ray.worker", "ray._private.worker", "ray.gcs_utils", "ray.dashboard",
                         "ray.autoscaler", "ray.ray_constants", "ray.internal", "ray._config",
                         "ray.includes", "ray.serialization", "ray.util.debug", "ray.util.metrics",
                         "ray.util.accelerators", "ray.util.collective", "ray.dag", "ray.workflow",
                         "ray.util.rpdb", "ray.util.tracing", "ray.util.annotations")):
            return n
        if n.split(".")[-1] in ("global_worker", "_internal_kv_get", "_internal_kv_put", "GcsClient",
                                "_global_node", "core_worker"):
            return n
    for s in f.strings:
        if "_private" in s and "ray." in s:
            return f"string {s[:60]!r}"
    for x in sorted(f.fixtures & _INTERNAL_FIXTURES):
        return f"fixture {x}"
    for k in ("include_dashboard", "dashboard_port", "dashboard_host"):
        if k in f.keywords:
            return f"{k}="
    for s in f.strings:
        if s in ("webui_url", "dashboard_url", "gcs_address", "raylet_socket_name", "object_store_address",
                 "node_manager_port", "redis_address", "metrics_export_port"):
            return f"address_info[{s!r}]"
    return None


def _generators(f: _Facts):
    for s in ("streaming", "dynamic"):
        if s in f.strings and "num_returns" in f.keywords:
            return f'num_returns="{s}"'
    hit = _prefix(f.names, "ray.ObjectRefGenerator", "ray.DynamicObjectRefGenerator",
                  "ray._raylet.ObjectRefGenerator", "ray._raylet.StreamingObjectRefGenerator",
                  "ray._raylet.DynamicObjectRefGenerator")
    if hit:
        return hit
    if f.remote_yield:
        return "a remote function or actor method that yields"
    return None


RULES = [
    ("placement_groups", "placement groups: ray.util.placement_group*, PlacementGroupSchedulingStrategy, "
                         "placement_group= / placement_group_* options",
     lambda f: _prefix(f.names, "ray.util.placement_group", "ray.util.get_current_placement_group",
                       "ray.util.remove_placement_group", "ray.util.placement_group_table",
                       "ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy")
     or next((f"{k}=" for k in sorted(f.keywords) if k.startswith("placement_group")), None)),
    ("runtime_env", "runtime_env: the runtime_env option or argument, ray.runtime_env, RuntimeEnv",
     lambda f: ("runtime_env=" if "runtime_env" in f.keywords else None)
     or _prefix(f.names, "ray.runtime_env")
     or ("'runtime_env'" if "runtime_env" in f.strings else None)),
    ("state_api", "the state API: ray.util.state, ray.experimental.state, ray.state / ray._private.state, "
                  "ray.timeline, ray.util.list_named_actors is NOT counted here (public)",
     lambda f: _prefix(f.names, "ray.util.state", "ray.experimental.state", "ray.state", "ray._private.state",
                       "ray.timeline", "ray.object_transfer_timeline")),
    ("generators", 'generator tasks: num_returns="streaming"/"dynamic", ObjectRefGenerator, '
                   "a @ray.remote function or actor method containing yield",
     _generators),
    ("ray_client", "Ray Client: ray.util.client, ray_start_client_server*, ray.client, 'ray://' addresses",
     lambda f: _prefix(f.names, "ray.util.client", "ray.client", "ray._private.client_mode_hook")
     or next((n for n in sorted(f.names) if n.split(".")[-1].startswith("ray_start_client_server")), None)
     or next((f"fixture {x}" for x in sorted(f.fixtures) if "client" in x and x.startswith(("ray_", "call_"))),
             None)
     or next((f"string {s!r}" for s in sorted(f.strings) if s.startswith("ray://")), None)),
    ("concurrency_groups", "concurrency groups: concurrency_groups= / concurrency_group=",
     lambda f: next((f"{k}=" for k in ("concurrency_groups", "concurrency_group") if k in f.keywords), None)),
    ("cluster", "test clusters and processes: ray.cluster_utils, the ray_start_cluster* / call_ray_start* "
                "fixtures, `ray start` / `ray stop` on the command line",
     lambda f: _prefix(f.names, "ray.cluster_utils", "ray.tests.cluster_utils")
     or next((f"fixture {x}" for x in sorted(f.fixtures) if _CLUSTER_FIXTURE.match(x)), None)
     or next((f"string {s[:40]!r}" for s in sorted(f.strings) if re.match(r"^ray (start|stop)\b", s)), None)),
    ("internals", "Ray internals: ray._private / ray._raylet / ray._common (beyond the stand-ins "
                  + ", ".join(sorted(STAND_INS)) + "), ray.core, ray.experimental, the worker, GCS, "
                  "internal KV, the dashboard and its addresses, Ray conftest fixtures that reach into Ray's processes "
                  "(" + ", ".join(sorted(_INTERNAL_FIXTURES)) + "), ray.util.metrics / debug / collective, DAGs",
     _internal),
]


def describe_rules() -> list[tuple[str, str]]:
    return [(category, text) for category, text, _ in RULES]


# ---- source facts --------------------------------------------------------------------------------

def _import_map(tree: ast.Module) -> dict[str, str]:
    """Local name → qualified name, from the file's imports (top level and inside functions)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    names[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if a.name != "*":
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _is_remote_decorator(dec) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    parts = _dotted(target)
    return bool(parts) and parts[-1] == "remote"


def _yields(fn) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
    return False


def _facts_of(nodes: list, imports: dict[str, str]) -> _Facts:
    f = _Facts(set(), set(), set(), set(), False)
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, (ast.Attribute, ast.Name)):
                parts = _dotted(node)
                if parts:
                    head = imports.get(parts[0], parts[0])
                    f.names.add(".".join([head, *parts[1:]]))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                f.strings.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                f.keywords.add(node.arg)
            elif isinstance(node, ast.Call):                  # ray.init(**{"runtime_env": ...}) style
                for kw in node.keywords:
                    if kw.arg is None and isinstance(kw.value, ast.Dict):
                        for k in kw.value.keys:
                            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                                f.keywords.add(k.value)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(_is_remote_decorator(d) for d in node.decorator_list) and _yields(node):
                    f.remote_yield = True
            elif isinstance(node, ast.ClassDef) and any(_is_remote_decorator(d) for d in node.decorator_list):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _yields(item):
                        f.remote_yield = True
    return f


def _is_fixture(fn) -> bool:
    for d in fn.decorator_list:
        parts = _dotted(d.func if isinstance(d, ast.Call) else d)
        if parts and parts[-1] == "fixture":
            return True
    return False


def _arg_names(fn) -> list[str]:
    return [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]


def classify_source(text: str) -> dict[str, Decision]:
    """Every test of a Ray test file, in or out of scope, with the reason."""
    tree = ast.parse(text)
    imports = _import_map(tree)
    top: dict[str, list] = {}                 # module-level name → defining nodes
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        top.setdefault(n.id, []).append(node)
    fixtures = {name: nodes[0] for name, nodes in top.items()
                if isinstance(nodes[0], (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_fixture(nodes[0])}

    def closure(start_nodes: list, requested: list[str]) -> tuple[list, set]:
        seen_nodes, seen_names, fixture_names = [], set(), set()
        stack_nodes = list(start_nodes)
        stack_fix = list(requested)
        while stack_fix:
            fx = stack_fix.pop()
            if fx in fixture_names:
                continue
            fixture_names.add(fx)
            if fx in fixtures:
                stack_nodes.append(fixtures[fx])
                stack_fix.extend(_arg_names(fixtures[fx]))
        while stack_nodes:
            node = stack_nodes.pop()
            if any(node is n for n in seen_nodes):
                continue
            seen_nodes.append(node)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and sub.id in top and sub.id not in seen_names:
                    seen_names.add(sub.id)
                    stack_nodes.extend(top[sub.id])
        return seen_nodes, fixture_names

    tests: dict[str, list] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            tests[node.name] = [node]
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    class_fixtures = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                      and _is_fixture(n)]
                    tests[f"{node.name}::{item.name}"] = [item, *node.decorator_list, *class_fixtures]

    decisions: dict[str, Decision] = {}
    for name, nodes in tests.items():
        requested = _arg_names(nodes[0])
        for n in nodes[1:]:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                requested += _arg_names(n)
        code, fixture_names = closure(nodes, requested)
        facts = _facts_of(code, imports)
        facts.fixtures = fixture_names
        decisions[name] = Decision("in_scope", "")
        for category, _, rule in RULES:
            hit = rule(facts)
            if hit:
                decisions[name] = Decision(category, str(hit))
                break
    return decisions
