"""The container images (docker/): built by docker/build.sh on the local base image, then run the way
the operator's pods run them.

- `images` (once per module): docker/build.sh builds the CPU runtime and operator images, and the
  GPU Dockerfile on the same base as a stand-in for its CUDA base, all against TASUKI_BASE_IMAGE
  (default tasuki-base:bookworm, made by .ci/setup-docker.sh: no image can be pulled here). The
  build time and the sizes are written to the terminal; the images are removed at the end.
- every image: a numeric non-root user, no compiler and no pip, dumb-init as PID 1, its HEALTHCHECK.
- a lone head container: healthy by its HEALTHCHECK, then `docker stop` (SIGTERM) ends it cleanly:
  exit code 0, because `tasuki start --block` handles SIGTERM, stops the head and the node agent
  and returns 0, and dumb-init exits with its child's code (143 would mean the signal killed it);
  the same with `tasuki` itself as PID 1, as in the operator's pods, whose `command` replaces the
  image's ENTRYPOINT.
- THE proof: the head pod and two worker pods that the operator's own builders
  (tasuki_operator.manifests) make for a Cluster are run as containers with `--network host`, each
  on its own loopback address as its pod IP, with the pod's /dev/shm size and memory limit; a driver
  in this process (`tasuki.init(address=..., token=...)`) runs tasks and an actor on the workers and
  moves a 100 MB array driver -> worker, worker -> worker and worker -> driver, checking its bytes.
- the operator image: `tasuki-operator --help`, then the operator in its container reconciling a
  Cluster on the Kubernetes emulation (tests/kube_emulator.py), healthy by its /healthz.

Without Docker these tests FAIL, saying to run .ci/setup-docker.sh, unless TASUKI_SKIP_DOCKER=1 is
set: a skip would hide a CI that lost its Docker. Containers are removed at the end, failed or not;
they carry a label with this process's pid, so a later run removes those of a run that was killed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, wait_until
from e2e import pods
from tasuki_operator import manifests

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docker" / "build.sh"
CRD = ROOT / "operator" / "tasuki_operator" / "crd.yaml"
BASE_IMAGE = os.environ.get("TASUKI_BASE_IMAGE", "tasuki-base:bookworm")
PREFIX, TAG = "tasuki-test/", "test"
IMAGES = {"runtime": f"{PREFIX}runtime:{TAG}", "operator": f"{PREFIX}operator:{TAG}",
          "gpu": f"{PREFIX}runtime-gpu:{TAG}-standin"}
# what each image may add to its base, MB: the runtime's venv is ~77 MB (NumPy is most of it), the
# operator's ~170 MB (the kubernetes client ~60), the GPU one's ~375 MB (cupy-cuda12x ~300)
SIZE_BUDGET_MB = {"runtime": 110, "operator": 220, "gpu": 450}
LABEL_KEY = "tasuki-test-images"           # on every container, with this process's pid as its value
NET = f"127.14.{os.getpid() % 250 + 1}"    # this run's pod IPs: .1 head, .2 .3 workers, .4 lone head, .5/.6 operator
TOKEN = "images-test-token"
BUILD_TIMEOUT_S = 480          # a first build downloads ~190 MB of wheels (cupy-cuda12x is 137 MB): ~1 min here
DOCKER_TIMEOUT_S = 120         # one docker command (run, stop, exec) on a loaded machine
HEALTH_INTERVAL = "1s"         # --health-interval for the tests: the images' own 10 s would only slow them
ARRAY_BYTES = 100 << 20


# pytest-timeout counts a fixture's setup in the first test that uses it: the build comes on top of a test
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 120)


# --- Docker --------------------------------------------------------------------------------------
def docker(*args: str, check: bool = True, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited with {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc


def require_docker() -> None:
    """Skip when TASUKI_SKIP_DOCKER=1; otherwise fail unless Docker answers and the base image is there."""
    if os.environ.get("TASUKI_SKIP_DOCKER") == "1":
        pytest.skip("TASUKI_SKIP_DOCKER=1: the container image tests are left out")
    if shutil.which("docker") is None:
        problem = "there is no `docker` command"
    elif (info := docker("info", "--format", "{{.ServerVersion}}", check=False)).returncode != 0:
        problem = f"`docker info` failed: {(info.stderr or info.stdout).strip()[:300].rstrip('.')}"
    elif docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        problem = f"the base image {BASE_IMAGE} is missing"
    else:
        return
    pytest.fail(f"{problem}. The image tests need Docker and a local base image: run `.ci/setup-docker.sh` as root "
                f"(it installs docker.io and debootstrap, starts dockerd without a bridge or iptables rules, and "
                f"makes {BASE_IMAGE}), or set TASUKI_SKIP_DOCKER=1 to leave these tests out.", pytrace=False)


def image_mb(image: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


def image_config(image: str) -> dict:
    return json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)


class Containers:
    """Containers started by a test or a fixture, all removed by remove_all() (`docker rm -f`)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, name: str, image: str, *args: str, command: list[str] = ()) -> str:
        name = f"tasuki-test-{os.getpid()}-{name}"
        self.names.append(name)
        docker("run", "--detach", "--name", name, "--label", f"{LABEL_KEY}={os.getpid()}",
               "--health-interval", HEALTH_INTERVAL,
               *args, image, *command)
        return name

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "--force", "--volumes", *self.names, check=False)
            self.names.clear()


def remove_leftovers() -> None:
    """Remove the containers of an earlier run of this module that was killed before it removed them."""
    listed = docker("ps", "--all", "--filter", f"label={LABEL_KEY}",
                    "--format", f'{{{{.ID}}}} {{{{.Label "{LABEL_KEY}"}}}}').stdout.split()
    stale = [cid for cid, pid in zip(listed[::2], listed[1::2]) if not Path(f"/proc/{pid}").exists()]
    if stale:
        docker("rm", "--force", "--volumes", *stale, check=False)


def logs(name: str) -> str:
    proc = docker("logs", "--tail", "40", name, check=False)
    return f"--- docker logs {name}:\n{proc.stdout}{proc.stderr}"


def state(name: str) -> dict:
    return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)


def wait_healthy(name: str, timeout: float = 60.0) -> dict:
    """The container's State once its HEALTHCHECK says healthy; fails early if it stops."""
    def healthy():
        now = state(name)
        if not now["Running"]:
            raise AssertionError(f"{name} stopped (exit code {now['ExitCode']}) before it was healthy\n{logs(name)}")
        return now if now.get("Health", {}).get("Status") == "healthy" else None
    try:
        return wait_until(healthy, timeout, f"{name} to be healthy", interval=0.2)
    except AssertionError as e:
        health = state(name).get("Health", {}).get("Log", [])[-1:]
        raise AssertionError(f"{e}; last health check: {health}\n{logs(name)}") from None


def exec_ok(name: str, *command: str) -> bool:
    return docker("exec", name, *command, check=False).returncode == 0


# --- the module's images -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(request):
    """The three images, built once for the module by docker/build.sh; removed afterwards."""
    require_docker()
    remove_leftovers()
    started = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD), "--base", BASE_IMAGE, "--gpu-stand-in", BASE_IMAGE, "--prefix", PREFIX,
                           "--tag", TAG, "--python-bin", sys.executable, "runtime", "operator", "gpu"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=ROOT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"docker/build.sh exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}",
                    pytrace=False)
    seconds = time.monotonic() - started
    base = image_mb(BASE_IMAGE)
    sizes = {kind: image_mb(image) for kind, image in IMAGES.items()}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        reporter.write_line(f"\ntest_images: built {', '.join(f'{k} {v:.0f} MB' for k, v in sizes.items())} "
                            f"on {BASE_IMAGE} ({base:.0f} MB) in {seconds:.0f} s")
    try:
        yield {"base_mb": base, "sizes": sizes}
    finally:
        docker("rmi", "--force", *IMAGES.values(), check=False)


@pytest.fixture
def containers():
    made = Containers()
    try:
        yield made
    finally:
        made.remove_all()


@pytest.mark.parametrize("kind", list(IMAGES))
def test_image_is_small_runs_as_non_root_without_compilers_under_an_init(images, kind):
    image = IMAGES[kind]
    added = images["sizes"][kind] - images["base_mb"]
    assert added < SIZE_BUDGET_MB[kind], (f"{image} adds {added:.0f} MB to its base, over its budget of "
                                          f"{SIZE_BUDGET_MB[kind]} MB: what grew?")
    config = image_config(image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"][:2] == ["/opt/tasuki/bin/dumb-init", "--"]
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]
    uid, on_path, venv = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                                "id -u; echo '|'; for c in gcc cc c++ g++ clang tcc make pip pip3; do command -v $c; "
                                "done; echo '|'; ls /opt/tasuki/bin").stdout.split("|")
    assert uid.split() == ["10001"]
    assert not on_path.split(), f"{image} has compilers or pip on its PATH: {on_path.split()}"
    assert not [b for b in venv.split() if b.startswith("pip")], f"pip is left in {image}'s venv: {venv.split()}"
    assert ("tasuki-operator" if kind == "operator" else "tasuki") in venv.split()
    if kind != "operator":
        # docker run's command replaces CMD and keeps the ENTRYPOINT: the init stays PID 1
        pid1 = docker("run", "--rm", "--network", "none", image, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert pid1[:3] == ["/opt/tasuki/bin/dumb-init", "--", "cat"]


def test_gpu_stand_in_has_cupy_for_cuda_12(images):
    """Every step of runtime-gpu.Dockerfile ran on the stand-in base: cupy-cuda12x is installed and imports
    (using a GPU needs the CUDA base and a driver, which this machine has not)."""
    out = docker("run", "--rm", "--network", "none", IMAGES["gpu"], "python", "-c",
                 "import importlib.metadata as m, cupy, tasuki; print(m.version('cupy-cuda12x'))").stdout
    assert re.fullmatch(r"1[3-9]\.\d+\.\d+\S*\n", out), out


def test_health_check_without_a_started_tasuki_says_so(images):
    proc = docker("run", "--rm", "--network", "none", IMAGES["runtime"],
                  "/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py", check=False)
    assert proc.returncode == 1
    assert "unhealthy: no cluster file /tmp/tasuki-10001/cluster.json yet" in proc.stdout


@pytest.mark.parametrize("entrypoint, pid_1", [
    ([], ["/opt/tasuki/bin/dumb-init", "--", "tasuki"]),                  # docker run: the image's init
    (["--entrypoint", "tasuki"], ["/opt/tasuki/bin/python3", "/opt/tasuki/bin/tasuki"]),   # a pod's `command`
], ids=["under-dumb-init", "as-pid-1-like-a-pod"])
def test_head_is_healthy_then_stops_cleanly_on_sigterm(images, containers, entrypoint, pid_1):
    """A pod's `command` replaces the image's ENTRYPOINT (the operator's pods set it), so `tasuki start
    --block` must also stop cleanly as PID 1 itself: it handles SIGTERM, which PID 1 needs."""
    ip = f"{NET}.4"
    name = containers.run("lone-head", IMAGES["runtime"], *entrypoint, "--network", "host", "--shm-size", "256m",
                          "-e", f"TASUKI_NODE_IP_ADDRESS={ip}", "-e", f"TASUKI_PORT={free_port(ip)}",
                          "-e", f"TASUKI_METRICS_PORT={free_port(ip)}", "-e", "TASUKI_NUM_CPUS=1",
                          "-e", "TASUKI_OBJECT_STORE_MEMORY=64M",
                          command=["start", "--head", "--block"] if entrypoint else [])
    wait_healthy(name)
    assert docker("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")[:len(pid_1)] == pid_1
    unreachable = docker("exec", name, "/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py",
                         f"http://{ip}:1/healthz", check=False)
    assert unreachable.returncode == 1 and "did not answer" in unreachable.stdout
    started = time.monotonic()
    docker("stop", "--time", str(manifests.TERMINATION_GRACE_S), name)
    took = time.monotonic() - started
    ended = state(name)
    assert ended["ExitCode"] == 0, f"exit code {ended['ExitCode']} (143: SIGTERM killed it)\n{logs(name)}"
    assert took < manifests.TERMINATION_GRACE_S / 2, f"`docker stop` took {took:.1f} s"
    assert "tasuki: stopped on SIGTERM" in logs(name)


# --- the proof: the operator's pods as containers, a driver outside ------------------------------------
def docker_run_args(pod: dict, ip: str, overrides: dict[str, str]) -> tuple[list[str], list[str]]:
    """(`docker run` options, command) for the one container of a Pod the operator built, as the e2e
    kubelet (e2e/kubelet.py, e2e/pods.py) runs it with pod IP `ip`: its env with the Secret's token and the
    downward-API fields filled in (`overrides` last: the head Service's address, as there is no
    kubelet here to put Service names in /etc/hosts), /dev/shm, limits, and $(VAR) expansion."""
    objects = {("Secret", ref["name"]): {ref["key"]: TOKEN} for item in pod["spec"]["containers"][0]["env"]
               if (ref := item.get("valueFrom", {}).get("secretKeyRef"))}
    return pods.docker_run_args(pod, pods.container_env(pod, pod_ip=ip, objects=objects) | overrides)


def images_cluster(metrics_port: int) -> dict:
    """A Cluster: a head with no CPUs for tasks, and groups `a` and `b` of one worker each, each with a
    custom resource of its own so a test can choose where work runs."""
    resources = {"limits": {"cpu": "2", "memory": "2Gi"}}
    return {
        "apiVersion": manifests.API_VERSION, "kind": manifests.KIND,
        "metadata": {"name": "images", "namespace": "test", "uid": "0f6e1c2a-images"},
        "spec": {
            "image": IMAGES["runtime"], "objectStoreMemory": "400Mi", "metrics": {"port": metrics_port},
            "head": {"numCpus": 0, "resources": resources},
            "workerGroups": [{"name": group, "replicas": 1, "tasukiResources": {f"group-{group}": 1},
                              "resources": resources} for group in ("a", "b")],
        },
    }


@pytest.fixture(scope="module")
def cluster(images):
    """The head and two worker pods of images_cluster() as containers on NET.1-3; this process a driver."""
    import tasuki
    made = Containers()
    head_ip = f"{NET}.1"
    head_address = f"{head_ip}:{manifests.RUNTIME_PORT}"
    metrics_port = free_port(head_ip)
    spec = images_cluster(metrics_port)
    try:
        options, command = docker_run_args(manifests.head_pod(spec), head_ip, {})
        head = made.run("head", IMAGES["runtime"], *options, command=command)
        wait_healthy(head)
        names = {"head": head}
        for i, group in enumerate(("a", "b"), start=2):
            pod = manifests.worker_pod(spec, group, manifests.pod_name(spec, group, "w"))
            options, command = docker_run_args(pod, f"{NET}.{i}", {"TASUKI_ADDRESS": head_address})
            names[group] = made.run(f"worker-{group}", IMAGES["runtime"], *options, command=command)
        tasuki.shutdown()                  # another module may have left this process connected
        tasuki.init(address=head_address, token=TOKEN)
        wait_until(lambda: len([n for n in tasuki.nodes() if n["Alive"]]) == 3, 60, "the two workers to join",
                   interval=0.2)
        yield {"containers": names, "metrics": f"http://{head_ip}:{metrics_port}",
               "nodes": {n["NodeManagerAddress"]: n["NodeID"] for n in tasuki.nodes()}}
    finally:
        tasuki.shutdown()
        made.remove_all()


def test_cluster_containers_are_healthy_with_the_init_as_pid_1(cluster):
    for name in cluster["containers"].values():
        wait_healthy(name)
        assert docker("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")[:2] == \
            ["/opt/tasuki/bin/dumb-init", "--"]
    with urllib.request.urlopen(cluster["metrics"] + "/api/v1/nodes", timeout=10) as answer:
        nodes = json.load(answer)
    assert sorted(n["ip"] for n in nodes) == [f"{NET}.{i}" for i in (1, 2, 3)]


def node_of_task(x):
    import tasuki
    return tasuki.get_runtime_context().get_node_id(), x * x


def make_array(nbytes: int):
    import numpy as np
    return np.arange(nbytes // 8, dtype=np.float64)


def digest(array):
    import hashlib

    import tasuki
    return array.nbytes, hashlib.sha256(array.tobytes()).hexdigest(), tasuki.get_runtime_context().get_node_id()


class Tally:
    def __init__(self):
        self.total = 0

    def add(self, k):
        import tasuki
        self.total += k
        return self.total, tasuki.get_runtime_context().get_node_id()


def test_driver_outside_runs_tasks_and_an_actor_on_the_worker_containers(cluster):
    import tasuki
    node_a, node_b = cluster["nodes"][f"{NET}.2"], cluster["nodes"][f"{NET}.3"]
    square = tasuki.remote(node_of_task)
    on_a = tasuki.get([square.options(resources={"group-a": 0.1}).remote(i) for i in range(4)])
    on_b = tasuki.get([square.options(resources={"group-b": 0.1}).remote(i) for i in range(4)])
    assert on_a == [(node_a, i * i) for i in range(4)]
    assert on_b == [(node_b, i * i) for i in range(4)]
    anywhere = tasuki.get([square.remote(i) for i in range(20)])
    assert {node for node, _ in anywhere} <= {node_a, node_b}      # the head offers no CPUs
    tally = tasuki.remote(Tally).options(resources={"group-b": 0.1}).remote()
    assert tasuki.get([tally.add.remote(k) for k in (1, 2, 3)]) == [(1, node_b), (3, node_b), (6, node_b)]
    tasuki.kill(tally)


def test_a_100_mb_array_moves_driver_to_worker_to_worker_to_driver(cluster):
    import numpy as np

    import tasuki
    node_a, node_b = cluster["nodes"][f"{NET}.2"], cluster["nodes"][f"{NET}.3"]
    array = make_array(ARRAY_BYTES)
    expected = hashlib.sha256(array.tobytes()).hexdigest()
    on = {group: tasuki.remote(digest).options(resources={f"group-{group}": 0.1}) for group in ("a", "b")}

    put = tasuki.put(array)                                         # driver -> the cluster -> worker a
    assert tasuki.get(on["a"].remote(put), timeout=120) == (ARRAY_BYTES, expected, node_a)
    made = tasuki.remote(make_array).options(resources={"group-a": 0.1}).remote(ARRAY_BYTES)
    assert tasuki.get(on["b"].remote(made), timeout=120) == (ARRAY_BYTES, expected, node_b)    # a -> b
    back = tasuki.get(made, timeout=120)                            # worker a -> driver
    assert back.nbytes == ARRAY_BYTES and np.array_equal(back, array)


# --- the operator image ---------------------------------------------------------------------------
def test_operator_image_runs_the_operator(images, containers, tmp_path):
    pytest.importorskip("kopf")
    from kube_emulator import KubeEmulator
    from tasuki_operator.main import DEFAULT_METRICS_PORT

    helped = docker("run", "--rm", "--network", "none", IMAGES["operator"], "--help")
    assert helped.stdout.startswith("usage: tasuki-operator")
    assert image_config(IMAGES["operator"])["Healthcheck"]["Test"][-1] == \
        f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/healthz"          # the operator's default port

    ns, ip = "images", f"{NET}.6"
    with KubeEmulator(host=f"{NET}.5", kubeconfig_dir=tmp_path) as kube:
        kube.apply_crd(CRD)
        os.chmod(kube.kubeconfig_path, 0o644)                       # the container runs as uid 10001
        port = free_port(ip)                                        # not 8080: other things here may hold it
        name = containers.run(                                     # as the chart's restricted securityContext
            "operator", IMAGES["operator"], "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--volume", f"{kube.kubeconfig_path}:/home/tasuki/kubeconfig:ro",
            command=["--kubeconfig", "/home/tasuki/kubeconfig", "--standalone", "--namespace", ns,
                     "--metrics-host", ip, "--metrics-port", str(port)])
        health = ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py", f"http://{ip}:{port}/healthz"]
        try:
            wait_until(lambda: exec_ok(name, *health), 60, "the operator's /healthz", interval=0.2)
            cluster = images_cluster(8080)
            cluster["metadata"] = {"name": "images", "namespace": ns}
            kube.create(cluster)
            wait_until(lambda: kube.get("pods", manifests.head_pod_name(cluster), ns), 60,
                       "the operator in its container to create the head pod", interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{logs(name)}") from None
        docker("stop", "--time", "30", name)
        assert state(name)["ExitCode"] == 0, logs(name)
