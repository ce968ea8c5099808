"""Pure modules (decisions, data formats) import neither zmq nor kubernetes nor kopf: the
runtime's, and the operator's (the Cluster spec, quantities, manifests, the autoscaler's plan, the
reconcile decision).

Each module is imported in a fresh interpreter under a bare package object, so that the real
package's `__init__.py` (tasuki's imports the API and with it zmq) does not run; then we look at
sys.modules. This sees imports made at import time by anything the module pulls in.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import tasuki

import tasuki_operator

PACKAGE_DIR = os.path.dirname(tasuki.__file__)
PURE_MODULES = [("tasuki", m) for m in ("scheduler", "object_store", "serialization", "protocol", "config",
                                        "exceptions", "object_directory")]
PURE_MODULES += [("tasuki_operator", m) for m in ("spec", "quantity", "manifests", "autoscaler",
                                                                  "status", "rbac", "reconcile", "job_plan")]
PACKAGE_DIRS = {"tasuki": PACKAGE_DIR, "tasuki_operator": os.path.dirname(tasuki_operator.__file__)}
FORBIDDEN = ["zmq", "kubernetes", "kopf"]

PROBE = textwrap.dedent("""
    import importlib, json, sys, types
    name = sys.argv[3] if len(sys.argv) > 3 else "tasuki"
    package = types.ModuleType(name)
    package.__path__ = [sys.argv[1]]
    package.__version__ = "0.0.0"
    sys.modules[name] = package
    importlib.import_module(name + "." + sys.argv[2])
    print(json.dumps(sorted(sys.modules)))
""")


@pytest.mark.parametrize("package, module", PURE_MODULES, ids=[f"{p}.{m}" for p, m in PURE_MODULES])
def test_pure_module_imports_no_io_library(package, module):
    out = subprocess.run([sys.executable, "-c", PROBE, PACKAGE_DIRS[package], module, package], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    import json
    loaded = json.loads(out.stdout)
    assert f"{package}.{module}" in loaded
    assert "tasuki.api" not in loaded                   # tasuki's real package __init__ did not run
    bad = sorted({name.split(".")[0] for name in loaded} & set(FORBIDDEN))
    assert bad == [], f"{package}.{module} imports {bad}"


def test_the_probe_sees_zmq_when_it_is_imported():
    """The check above would catch a module that imports zmq (transport.py does)."""
    out = subprocess.run([sys.executable, "-c", PROBE, PACKAGE_DIR, "transport"], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "zmq" in out.stdout
