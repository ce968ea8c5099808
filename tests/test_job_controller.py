"""tasuki_operator.job_controller's pure helper: a ConfigMap as the job's working-directory package.
The controller itself runs against the Kubernetes emulation in tests/test_operator_jobs.py."""
from __future__ import annotations

import base64
import io
import zipfile

import pytest

pytest.importorskip("kubernetes")
from tasuki_operator.job_controller import package_of  # noqa: E402


def test_a_configmap_package_is_deterministic_and_holds_every_key():
    cm = {"data": {"b.py": "print(2)", "a.py": "print(1)"}, "binaryData": {"w.bin": base64.b64encode(b"\0\1").decode()}}
    data, sha = package_of(cm)
    assert package_of({"data": dict(reversed(list(cm["data"].items()))), "binaryData": cm["binaryData"]}) == (data, sha)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == ["a.py", "b.py", "w.bin"] and z.read("w.bin") == b"\0\1"
