"""The platforms the end-to-end scenarios run on: one interface, two implementations.

    scenarios (test_scenarios.py) ──► Platform: kubectl, apply/get/list/delete, events, wait,
                                       head_address, head_http, token, kill_container,
                                       only_head_client, prometheus_targets, leftovers, logs
                                        ├── LocalPlatform  (what .ci/run runs here)
                                        └── RealPlatform   (TASUKI_E2E_KUBECONFIG: kind, k3d, a cloud)

Everything the scenarios do to Kubernetes goes through real `kubectl` against the platform's
kubeconfig, so the scenario code is the same on both; only how a platform is set up, how the head is
reached from outside the cluster and how a container is killed differ.

`LocalPlatform.start()`, in order:
  1. the images: docker/build.sh builds tasuki-e2e/runtime:e2e and tasuki-e2e/operator:e2e on the local
     base image (TASUKI_E2E_IMAGE_RUNTIME / _OPERATOR name images to use instead; built ones are removed
     at the end, images that were already there are kept);
  2. the Kubernetes API emulation (tests/kube_emulator.py) on EMULATOR_IP;
  3. the operator chart, rendered by real helm: `helm install` is tried against the emulation first
     (it fails today, in under a second: helm 4 wants the OpenAPI documents even with
     --disable-openapi-validation, waits for a CRD with a watch bookmark the emulation never sends,
     and stores its release record as a protobuf Secret), else
     `helm template --include-crds | kubectl apply --validate=false -f -`; the output says which;
  4. the Kubelet (e2e/kubelet.py): every Pod of the namespaces becomes a Docker container;
  5. the operator: the emulation has no Deployment controller, so the rendered Deployment's own
     container (its image and args) is run by `docker run --network host`, with the emulation's
     kubeconfig mounted and the Kubelet's hosts file (every Service name -> its pod's IP) mounted
     over /etc/hosts, so its default --head-url http://{service}.{namespace}.svc:{port} reaches the
     head pod as in a cluster.

`RealPlatform.start()`: `helm install` of the operator chart (images from TASUKI_E2E_IMAGE_*), waits
for its Deployment; the head is reached through `kubectl port-forward` (kept running across head
restarts), a container is killed with `kubectl exec ... kill -9 -1`.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from conftest import free_port
from kubectl import HELM_MISSING, MISSING, helm_path, kubectl_path

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
OPERATOR_CHART = CHARTS / "tasuki-operator"
BUILD = ROOT / "docker" / "build.sh"
BASE_IMAGE = os.environ.get("TASUKI_BASE_IMAGE", "tasuki-base:bookworm")
RELEASE = "tasuki-operator"
OPERATOR_NAMESPACE = "tasuki-system"
NAMESPACE = "e2e"                      # the scenarios' namespace
LABEL = "tasuki-e2e"                   # the Docker label of every pod container (the Kubelet's): value = our pid
OPERATOR_LABEL = "tasuki-e2e-operator"  # the operator's container (not a pod: the scenarios' "no container left" skips it)
IP_PREFIX = "127.21.1"                 # pods get 127.21.1.y from the Kubelet (127.21.0.y: the emulation, the operator)
EMULATOR_IP, OPERATOR_IP = "127.21.0.1", "127.21.0.2"
RUNTIME_PORT, HEAD_HTTP_PORT = 6380, 8080      # the head Service's ports (tasuki_operator.manifests)
LOCAL_TAG = "e2e"
BUILD_TIMEOUT_S = 600                 # a first build downloads the dependency wheels
KUBECTL_TIMEOUT_S = 60
DOCKER_TIMEOUT_S = 120
LOG_TAIL_LINES = 60                   # per pod or process in a failure's log dump

Obj = dict[str, Any]


_pytest_config = None            # set by e2e/conftest.py: lines reach the terminal past pytest's capture


def use_terminal_of(config) -> None:
    global _pytest_config
    _pytest_config = config


def terminal_line(line: str) -> None:
    """Write `line` on the terminal, passed test or failed (pytest's capture would keep a passing
    test's output), and append it to $TASUKI_E2E_TIMINGS when set (the README's table is made from it)."""
    if _pytest_config is not None:
        capture = _pytest_config.pluginmanager.get_plugin("capturemanager")
        reporter = _pytest_config.pluginmanager.get_plugin("terminalreporter")
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        print(line, file=sys.stderr, flush=True)
    if os.environ.get("TASUKI_E2E_TIMINGS"):
        with open(os.environ["TASUKI_E2E_TIMINGS"], "a") as out:
            out.write(line + "\n")


def say(message: str) -> None:
    """A line of the platform's progress on the terminal."""
    terminal_line(f"e2e: {message}")


def timing(scenario: str, step: str, seconds: float) -> None:
    """`TIMING <scenario> <step> <seconds>` on the terminal (and in $TASUKI_E2E_TIMINGS)."""
    terminal_line(f"TIMING {scenario} {step} {seconds:.1f}")


def run(argv: list[str], *, input: str | None = None, env: dict | None = None, timeout: float = KUBECTL_TIMEOUT_S,
        check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, input=input, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited with {done.returncode}:\n{done.stderr[-3000:]}{done.stdout[-1000:]}")
    return done


def docker(*args: str, check: bool = True, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess:
    return run(["docker", *args], check=check, timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
             describe: Callable[[], str] | None = None) -> Any:
    """Call `predicate` until it returns something truthy (returned); after `timeout` seconds fail
    saying what was waited for, how long, and what `describe()` says the state is then."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            state = ""
            if describe is not None:
                with contextlib.suppress(Exception):
                    state = f"; now: {describe()}"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{state}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    """Whether a GET of `url` answers 2xx within 5 s."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return 200 <= answer.status < 300
    except OSError:
        return False


def image_parts(image: str) -> tuple[str, str]:
    """("repo/name", "tag") of "repo/name:tag" (a registry port's colon is not a tag)."""
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, "latest")


class Platform:
    """What the scenarios use, implemented with kubectl against `self.kubeconfig` in `self.namespace`;
    the subclasses add how the head is reached from outside and how containers are killed."""

    kind = "abstract"

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.kubeconfig = ""
        self.kubectl_binary = kubectl_path()
        if not self.kubectl_binary:
            raise AssertionError(MISSING)
        self.helm_binary = helm_path()
        if not self.helm_binary:
            raise AssertionError(HELM_MISSING)
        self.install_method = ""

    # --- kubectl -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = KUBECTL_TIMEOUT_S, in_namespace: bool = True) -> str:
        """kubectl's stdout (in the scenarios' namespace unless args say -n/--all-namespaces, or
        `in_namespace` is False: each object's own namespace)."""
        scoped = not in_namespace or any(a in ("-n", "--namespace", "-A", "--all-namespaces") or a.startswith("--namespace=")
                     for a in args)
        argv = [self.kubectl_binary, *(() if scoped else ("-n", self.namespace)), *args]
        return run(argv, input=input, env=self.env(), timeout=timeout, check=check).stdout

    def helm(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.helm_binary, *args], env=self.env(), timeout=timeout, check=check)

    def apply(self, manifest: Obj | str) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "--validate=false", "-f", "-", input=text)

    def get(self, resource: str, name: str) -> Obj | None:
        out = self.kubectl("get", resource, name, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def list(self, resource: str, selector: str | None = None) -> list[Obj]:
        out = self.kubectl("get", resource, "-o", "json", *(("-l", selector) if selector else ()))
        return json.loads(out)["items"]

    def delete(self, resource: str, name: str, *flags: str) -> str:
        return self.kubectl("delete", resource, name, "--ignore-not-found", "--wait=false", *flags)

    def events(self) -> list[Obj]:
        """The namespace's Events (core/v1), oldest first."""
        return sorted(self.list("events"), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def token(self, cluster: str) -> str:
        secret = self.get("secret", f"{cluster}-token")
        assert secret, f"the Cluster {cluster}'s token Secret {cluster}-token is missing"
        return base64.b64decode(secret["data"]["token"]).decode()

    def cluster_pods(self, cluster: str) -> list[Obj]:
        return self.list("pods", f"tasuki.dev/cluster={cluster}")

    # --- per platform ----------------------------------------------------------------------------
    def start(self) -> "Platform":
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def head_address(self, cluster: str) -> str:
        """host:port of the head's runtime port, as a client outside the cluster reaches it."""
        raise NotImplementedError

    def head_http(self, cluster: str) -> str:
        """http://host:port of the head's HTTP port (/metrics, /api/v1), from outside the cluster."""
        raise NotImplementedError

    def kill_container(self, pod: str) -> None:
        """SIGKILL what runs in the pod's container (the pod is not deleted)."""
        raise NotImplementedError

    def only_head_client(self, cluster: str) -> contextlib.AbstractContextManager:
        """A context yielding (runner, address): runner.run(argv, env, timeout) runs a command that
        reaches the head at `address` and nothing else of the cluster."""
        raise NotImplementedError

    def prometheus_targets(self, cluster: str) -> tuple[list[Obj], str]:
        """(the head pods as Prometheus here reaches them: Pod dicts whose status.podIP and metrics
        containerPort lead to the head's /metrics from this machine; the operator's metrics host:port)."""
        raise NotImplementedError

    def leftover_containers(self) -> list[str]:
        """Containers of this platform's pods still there (not the operator's)."""
        return []

    def logs(self) -> str:
        """What to read when a scenario failed: pods, Events, and the platform's own logs."""
        parts = []
        with contextlib.suppress(Exception):
            parts.append("--- kubectl get pods -o wide:\n" + self.kubectl("get", "pods", "-o", "wide", check=False))
            parts.append("--- events:\n" + "\n".join(
                f"{e.get('lastTimestamp')} {e.get('type')} {e.get('reason')} "
                f"{e.get('involvedObject', {}).get('name')}: {e.get('message')}" for e in self.events()[-40:]))
            for pod in self.list("pods"):
                name = pod["metadata"]["name"]
                parts.append(f"--- logs of pod {name}:\n" + self.kubectl(
                    "logs", name, f"--tail={LOG_TAIL_LINES}", check=False, timeout=20))
        return "\n".join(parts)


# =====================================================================================================
class LocalPlatform(Platform):
    """The emulation, the real operator in its container, real kubectl and helm, and the Kubelet."""

    kind = "local"

    def __init__(self, namespace: str = NAMESPACE) -> None:
        super().__init__(namespace)
        self.tmp = Path(tempfile.mkdtemp(prefix="tasuki-e2e-"))
        self.hosts_file = self.tmp / "hosts"
        self.images = {"runtime": os.environ.get("TASUKI_E2E_IMAGE_RUNTIME", f"{LABEL}/runtime:{LOCAL_TAG}"),
                       "operator": os.environ.get("TASUKI_E2E_IMAGE_OPERATOR", f"{LABEL}/operator:{LOCAL_TAG}")}
        self.built: list[str] = []
        self.emulator = None
        self.kubelet = None
        self.operator_container = ""
        self.operator_port = 0
        self.timings: dict[str, float] = {}

    @property
    def runtime_image(self) -> str:
        return self.images["runtime"]

    def start(self) -> "LocalPlatform":
        from kube_emulator import KubeEmulator
        from e2e.kubelet import Kubelet
        remove_leftovers()
        self._timed("images", self._build_images)
        self.emulator = KubeEmulator(host=EMULATOR_IP, kubeconfig_dir=self.tmp).start()
        self.kubeconfig = self.emulator.kubeconfig_path
        os.chmod(self.kubeconfig, 0o644)           # the operator's container runs as uid 10001
        for namespace in (self.namespace, OPERATOR_NAMESPACE):
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        self._timed("install", self._install_operator_chart)
        self.hosts_file.write_text("127.0.0.1 localhost\n")
        os.chmod(self.hosts_file, 0o644)
        self.kubelet = Kubelet(self.emulator.url, [self.namespace], ip_prefix=IP_PREFIX, label=LABEL,
                               hosts_file=self.hosts_file).start()
        self._timed("operator", self._start_operator)
        say(f"local platform up: emulator {self.emulator.url}, operator chart by {self.install_method}, "
            f"operator container {self.operator_container} on {OPERATOR_IP}:{self.operator_port}, "
            f"images {self.images['runtime']}, {self.images['operator']} "
            f"({', '.join(f'{k} {v:.0f} s' for k, v in self.timings.items())})")
        return self

    def _timed(self, step: str, fn: Callable[[], None]) -> None:
        started = time.monotonic()
        fn()
        self.timings[step] = time.monotonic() - started
        timing("platform", step, self.timings[step])

    def _build_images(self) -> None:
        wanted = [kind for kind, image in self.images.items()
                  if docker("image", "inspect", image, check=False).returncode != 0]
        if not wanted:
            say(f"using the images already there: {', '.join(self.images.values())}")
            return
        for kind in wanted:
            if not self.images[kind].startswith(f"{LABEL}/"):
                raise AssertionError(f"TASUKI_E2E_IMAGE_{kind.upper()}={self.images[kind]} is not a local image: "
                                     f"build it, or unset the variable to have the suite build {LABEL}/{kind}:{LOCAL_TAG}")
        say(f"building {', '.join(wanted)} with docker/build.sh on {BASE_IMAGE}")
        run(["bash", str(BUILD), "--base", BASE_IMAGE, "--prefix", f"{LABEL}/", "--tag", LOCAL_TAG,
             "--python-bin", sys.executable, *wanted], timeout=BUILD_TIMEOUT_S)
        self.built = [self.images[kind] for kind in wanted]

    def _chart_args(self) -> list[str]:
        repository, tag = image_parts(self.images["operator"])
        return [RELEASE, str(OPERATOR_CHART), "--namespace", OPERATOR_NAMESPACE,
                "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                "--set", f"watchNamespaces={{{self.namespace}}}"]

    def _install_operator_chart(self) -> None:
        # --skip-crds: helm's wait for a CRD to be established lists with a bookmark the emulation never
        # sends (it hangs); --disable-openapi-validation: the emulation serves no OpenAPI documents
        tried = self.helm("install", *self._chart_args(), "--skip-crds", "--disable-openapi-validation",
                          "--wait=hookOnly", "--timeout", "20s", timeout=60, check=False)
        if tried.returncode == 0:
            self.install_method = "helm install (the CRD by kubectl apply)"
            self.kubectl("apply", "--validate=false", "-f", str(OPERATOR_CHART / "crds"))
        else:
            reason = (tried.stderr.strip().splitlines() or ["?"])[-1][:200]
            self.install_method = f"helm template | kubectl apply (helm install failed against the emulation: {reason})"
            manifest = self.helm("template", *self._chart_args(), "--include-crds").stdout
            self.kubectl("apply", "--validate=false", "-f", "-", input=manifest, in_namespace=False)
        say(f"operator chart installed by {self.install_method}")
        wait_for(lambda: self.get("crd", "clusters.tasuki.dev"), 30, "the Cluster CRD to be registered")

    def _start_operator(self) -> None:
        """Run the rendered Deployment's container, as its pod would run, outside the emulation's pods."""
        deployment = json.loads(self.kubectl("get", "deployment", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json"))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        self.operator_port = free_port(OPERATOR_IP)
        name = f"tasuki-e2e-{os.getpid()}-operator"
        docker("run", "--detach", "--name", name, "--label", f"{OPERATOR_LABEL}={os.getpid()}",
               "--network", "host", "--volume", f"{self.kubeconfig}:/home/tasuki/kubeconfig:ro",
               "--volume", f"{self.hosts_file}:/etc/hosts:ro",
               "--env", "POD_NAME=tasuki-operator-e2e", "--env", f"POD_NAMESPACE={OPERATOR_NAMESPACE}",
               container["image"], *container["args"], "--kubeconfig", "/home/tasuki/kubeconfig",
               "--metrics-host", OPERATOR_IP, "--metrics-port", str(self.operator_port))
        self.operator_container = name

        def healthy() -> bool:
            state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
            assert state["Running"], f"the operator exited with {state['ExitCode']}:\n{self.operator_log()}"
            return http_ok(f"http://{OPERATOR_IP}:{self.operator_port}/healthz")
        wait_for(healthy, 90, "the operator's /healthz", describe=self.operator_log)

    def operator_log(self, tail: int = LOG_TAIL_LINES) -> str:
        if not self.operator_container:
            return ""
        done = docker("logs", "--tail", str(tail), self.operator_container, check=False)
        return done.stdout + done.stderr

    def close(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
        if self.operator_container:
            docker("rm", "--force", self.operator_container, check=False)
        if self.emulator is not None:
            self.emulator.stop()
        if self.built:
            docker("rmi", "--force", *self.built, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- outside access ----------------------------------------------------------------------------
    def _head_ip(self, cluster: str) -> str:
        ip = self.kubelet.resolve(f"{cluster}-head.{self.namespace}.svc")
        assert ip, f"the head Service {cluster}-head selects no running pod (the Kubelet resolves it to nothing)"
        return ip

    def head_address(self, cluster: str) -> str:
        return f"{self._head_ip(cluster)}:{RUNTIME_PORT}"

    def head_http(self, cluster: str) -> str:
        return f"http://{self._head_ip(cluster)}:{HEAD_HTTP_PORT}"

    def kill_container(self, pod: str) -> None:
        self.kubelet.kill_container(self.namespace, pod, "KILL")

    @contextlib.contextmanager
    def only_head_client(self, cluster: str) -> Iterator[tuple[Any, str]]:
        from netns import OnlyRouteTo, available
        why_not = available()
        if why_not:
            raise AssertionError(f"no network namespace for a client that reaches only the head: {why_not}")
        ip = self._head_ip(cluster)
        with OnlyRouteTo(ip, name_prefix="tke2e-") as namespace:
            yield namespace, f"{ip}:{RUNTIME_PORT}"

    def prometheus_targets(self, cluster: str) -> tuple[list[Obj], str]:
        return [self.get("pod", f"{cluster}-head")], f"{OPERATOR_IP}:{self.operator_port}"

    def leftover_containers(self) -> list[str]:
        return docker("ps", "--all", "--filter", f"label={LABEL}={os.getpid()}", "--format", "{{.Names}}").stdout.split()

    def logs(self) -> str:
        parts = [super().logs(), f"--- operator ({self.operator_container}):\n{self.operator_log()}"]
        if self.kubelet is not None:
            parts.append("--- kubelet:\n" + "\n".join(self.kubelet.log()[-LOG_TAIL_LINES:]))
        return "\n".join(parts)


def remove_leftovers() -> None:
    """Remove the containers a killed earlier run of the suite left (their label's pid is gone)."""
    for label in (LABEL, OPERATOR_LABEL):
        listed = docker("ps", "--all", "--filter", f"label={label}",
                        "--format", f'{{{{.ID}}}} {{{{.Label "{label}"}}}}').stdout.split()
        stale = [cid for cid, pid in zip(listed[::2], listed[1::2])
                 if not pid.isdigit() or not Path(f"/proc/{pid}").exists()]
        if stale:
            docker("rm", "--force", "--volumes", *stale, check=False)


# =====================================================================================================
class PortForward:
    """`kubectl port-forward TARGET LOCAL:REMOTE`, started again whenever it exits (a port-forward to
    a Service ends with the pod it picked: the head pod's restart must not cut the client off)."""

    def __init__(self, platform: Platform, target: str, remote_port: int) -> None:
        self.platform, self.target, self.remote_port = platform, target, remote_port
        self.local_port = free_port()
        self.address = f"127.0.0.1:{self.local_port}"
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._keep, daemon=True, name=f"port-forward {target}")
        self._thread.start()
        wait_for(self._answers, 60, f"kubectl port-forward {target} {self.local_port}:{remote_port}")

    def _answers(self) -> bool:
        import socket
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.local_port), timeout=1):
            return True
        return False

    def _keep(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                [self.platform.kubectl_binary, "-n", self.platform.namespace, "port-forward", self.target,
                 f"{self.local_port}:{self.remote_port}"], env=self.platform.env(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            self._proc.wait()
            self._stop.wait(1)

    def close(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        self._thread.join(10)


class RealPlatform(Platform):
    """A real cluster at TASUKI_E2E_KUBECONFIG, the operator installed there by `helm install`."""

    kind = "real"

    def __init__(self, kubeconfig: str, namespace: str = NAMESPACE) -> None:
        super().__init__(namespace)
        self.kubeconfig = kubeconfig
        self.images = {"runtime": os.environ.get("TASUKI_E2E_IMAGE_RUNTIME", "tasuki/runtime:0.1.0"),
                       "operator": os.environ.get("TASUKI_E2E_IMAGE_OPERATOR", "tasuki/operator:0.1.0")}
        self.forwards: dict[tuple[str, int], PortForward] = {}

    @property
    def runtime_image(self) -> str:
        return self.images["runtime"]

    def start(self) -> "RealPlatform":
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        repository, tag = image_parts(self.images["operator"])
        self.helm("install", RELEASE, str(OPERATOR_CHART), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
                  "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                  "--set", f"watchNamespaces={{{self.namespace}}}", "--wait", "--timeout", "5m", timeout=360)
        self.install_method = "helm install"
        say(f"real platform: operator installed by helm install in {OPERATOR_NAMESPACE}, images {self.images}")
        return self

    def close(self) -> None:
        for forward in self.forwards.values():
            forward.close()
        self.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", check=False)
        self.kubectl("delete", "namespace", self.namespace, "--wait=true", "--timeout=180s", check=False, timeout=200)

    def _forward(self, target: str, port: int, namespace: str | None = None) -> str:
        key = (target, port)
        if key not in self.forwards:
            self.forwards[key] = PortForward(self, target, port)
        return self.forwards[key].address

    def head_address(self, cluster: str) -> str:
        return self._forward(f"svc/{cluster}-head", RUNTIME_PORT)

    def head_http(self, cluster: str) -> str:
        return "http://" + self._forward(f"svc/{cluster}-head", HEAD_HTTP_PORT)

    def kill_container(self, pod: str) -> None:
        # every process but the container's init (dumb-init, which then exits with its child)
        self.kubectl("exec", pod, "-c", "tasuki", "--", "sh", "-c", "kill -9 -1", check=False)

    @contextlib.contextmanager
    def only_head_client(self, cluster: str) -> Iterator[tuple[Any, str]]:
        """Through a port-forward the client reaches only the head; TASUKI_VIA_HEAD=1 says so at once."""
        address = self.head_address(cluster)

        class Runner:
            @staticmethod
            def run(argv: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
                return run(argv, env={**env, "TASUKI_VIA_HEAD": "1"}, timeout=timeout, check=False)
        yield Runner(), address

    def prometheus_targets(self, cluster: str) -> tuple[list[Obj], str]:
        """Both through port-forwards: the head pod's address and metrics port replaced by the forward's."""
        operator = f"svc/{RELEASE}-metrics"
        if (operator, HEAD_HTTP_PORT) not in self.forwards:
            self.forwards[(operator, HEAD_HTTP_PORT)] = PortForward(
                _InNamespace(self, OPERATOR_NAMESPACE), operator, HEAD_HTTP_PORT)
        head = self.get("pod", f"{cluster}-head")
        host, port = self.head_http(cluster).removeprefix("http://").split(":")
        head["status"]["podIP"] = host
        for port_spec in head["spec"]["containers"][0].get("ports", ()):
            if port_spec["containerPort"] == HEAD_HTTP_PORT:
                port_spec["containerPort"] = int(port)
        return [head], self.forwards[(operator, HEAD_HTTP_PORT)].address


class _InNamespace:
    """A platform seen from another namespace (the operator's), for a PortForward."""

    def __init__(self, platform: Platform, namespace: str) -> None:
        self.kubectl_binary, self.namespace, self.env = platform.kubectl_binary, namespace, platform.env


def platform_from_environment() -> Platform:
    """RealPlatform when TASUKI_E2E_KUBECONFIG is set, else LocalPlatform; not started."""
    kubeconfig = os.environ.get("TASUKI_E2E_KUBECONFIG")
    return RealPlatform(kubeconfig) if kubeconfig else LocalPlatform()
