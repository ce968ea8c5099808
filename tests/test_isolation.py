"""Pure modules (decisions, data formats) import neither zmq nor kubernetes nor kopf.

Each module is imported in a fresh interpreter under a bare `tasuki` package object, so that
`tasuki/__init__.py` (which imports the API and with it zmq) does not run; then we look at
sys.modules. This sees imports made at import time by anything the module pulls in.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import tasuki

PACKAGE_DIR = os.path.dirname(tasuki.__file__)
PURE_MODULES = ["scheduler", "object_store", "serialization", "protocol", "config", "exceptions"]
FORBIDDEN = ["zmq", "kubernetes", "kopf"]

PROBE = textwrap.dedent("""
    import importlib, json, sys, types
    package = types.ModuleType("tasuki")
    package.__path__ = [sys.argv[1]]
    package.__version__ = "0.0.0"
    sys.modules["tasuki"] = package
    importlib.import_module("tasuki." + sys.argv[2])
    print(json.dumps(sorted(sys.modules)))
""")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_library(module):
    out = subprocess.run([sys.executable, "-c", PROBE, PACKAGE_DIR, module], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    import json
    loaded = json.loads(out.stdout)
    assert f"tasuki.{module}" in loaded
    assert "tasuki.api" not in loaded                   # the real package __init__ did not run
    bad = sorted({name.split(".")[0] for name in loaded} & set(FORBIDDEN))
    assert bad == [], f"tasuki.{module} imports {bad}"


def test_the_probe_sees_zmq_when_it_is_imported():
    """The check above would catch a module that imports zmq (transport.py does)."""
    out = subprocess.run([sys.executable, "-c", PROBE, PACKAGE_DIR, "transport"], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "zmq" in out.stdout
