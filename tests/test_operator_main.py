"""`tasuki-operator` the command: its arguments, and two replicas electing a leader through the Lease."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("kopf")
from kube_emulator import KubeEmulator                                   # noqa: E402
from test_operator import CRD, ROOT, free_port, wait_for                 # noqa: E402

from tasuki_operator.main import parse_args                              # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--head-url", "http://{nope}:8080"], "unknown placeholder {nope}"),
    (["--head-url", "ftp://x"], "http"),
    (["--metrics-port", "70000"], "--metrics-port 70000"),
    (["--workers", "0"], "--workers 0"),
])
def test_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_and_environment(monkeypatch):
    monkeypatch.setenv("TASUKI_OPERATOR_HEAD_URL", "http://127.0.0.1:{port}/x")
    args = parse_args(["-n", "a", "-n", "b"])
    assert args.namespace == ["a", "b"] and args.head_url == "http://127.0.0.1:{port}/x"
    assert (args.metrics_host, args.metrics_port, args.standalone) == ("0.0.0.0", 8080, False)


def test_unreadable_kubeconfig_exits_2(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: a kubeconfig")
    proc = subprocess.run([sys.executable, "-m", "tasuki_operator.main", "--kubeconfig", str(bad), "--standalone"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "cannot load Kubernetes credentials" in proc.stderr


def test_two_replicas_one_leader_and_a_handover(tmp_path):
    with KubeEmulator() as kube:
        kube.apply_crd(CRD)
        procs, logs, ports = [], [], [free_port(), free_port()]
        started = time.monotonic()
        for i in range(2):
            log = tmp_path / f"operator-{i}.log"
            logs.append(log)
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tasuki_operator.main", "--kubeconfig", str(kube.kubeconfig_path),
                     "--namespace", "lead", "--identity", f"replica-{i}", "--metrics-host", "127.0.0.1",
                     "--metrics-port", str(ports[i]), "--head-url", "http://127.0.0.1:{port}"],
                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        try:
            def holder() -> str:
                lease = kube.get("leases", "tasuki-operator", "lead")
                return (lease or {}).get("spec", {}).get("holderIdentity") or ""
            first = wait_for("a leader", holder, 60)
            leader = 0 if first.startswith("replica-0_") else 1
            other = 1 - leader
            # (the Lease is visible before its holder has written the line that says so)
            wait_for("the leader's log to say so", lambda: "leading as" in logs[leader].read_text(), 30)
            assert "leading as" not in logs[other].read_text(), "both replicas lead"
            # a standby waiting for the Lease stays healthy (its liveness probe must not restart it): past
            # the 10 s a stuck event loop is allowed, /healthz still answers 200
            wait_for("12 s since the start", lambda: time.monotonic() - started > 12, 30)
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[other]}/healthz", timeout=5) as r:
                assert r.status == 200
            procs[leader].send_signal(signal.SIGTERM)
            assert procs[leader].wait(30) == 0, logs[leader].read_text()
            wait_for("the other replica to lead", lambda: holder().startswith(f"replica-{other}_"), 30)
            wait_for("its log to say so", lambda: "leading as" in logs[other].read_text(), 30)
            # and it acts: a Cluster gets its head pod
            kube.create({"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": "demo", "namespace": "lead"},
                         "spec": {"image": "tasuki/runtime:0.1.0", "head": {"numCpus": 0}, "workerGroups": []}})
            wait_for("the head pod", lambda: kube.get("pods", "demo-head", "lead"), 30,
                     lambda: logs[other].read_text()[-3000:])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(30)
