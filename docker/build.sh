#!/usr/bin/env bash
# Builds tasuki's container images from this repository: tasuki/runtime, tasuki/operator and
# tasuki/runtime-gpu (docker/*.Dockerfile).
#
#   docker/build.sh [options] [runtime] [operator] [gpu]        (default: all three)
#
#   --base IMAGE          base of the runtime and operator images (default: ARG BASE of their Dockerfiles,
#                         python:3.11-slim-bookworm); a local image works (.ci/setup-docker.sh makes
#                         tasuki-base:bookworm)
#   --python X.Y          the Python version of --base (default: ARG PYTHON of the Dockerfiles, 3.11)
#   --gpu-base IMAGE      base of the GPU image (default: ARG BASE of runtime-gpu.Dockerfile, a CUDA 12
#                         runtime image)
#   --gpu-python X.Y      the Python version the GPU image gets (default: ARG PYTHON there, 3.10, Ubuntu
#                         22.04's)
#   --gpu-stand-in IMAGE  where no CUDA base can be had: build runtime-gpu.Dockerfile on IMAGE (which has
#                         python3, at --python's version unless --gpu-python says otherwise), tagged
#                         TAG-standin; every step of the Dockerfile runs, the CUDA libraries aside
#   --tag TAG             the images' tag (default: the version in pyproject.toml)
#   --prefix PREFIX       image names PREFIXruntime, PREFIXoperator, PREFIXruntime-gpu (default: tasuki/)
#   --glibc 2.N           the newest glibc a wheel may need (default 2.35: Ubuntu 22.04; Debian 12 has 2.36)
#   --arch ARCH           the wheels' machine (default: uname -m)
#   --python-bin PATH     the Python whose pip makes the wheels (default: python3)
#   --lint-only           check the Dockerfiles (docker/lint.py; also `docker build --check` where this
#                         Docker has it) and build nothing
#
# How: pip wheel makes the tasuki wheel from a copy of the package's sources; pip download fetches the
# dependency wheels for the base's Python and glibc (binary wheels only, so nothing is compiled); both
# go into a build context of their own with docker/healthcheck.py, and `docker build` installs them
# with --no-index. Only pip reaches a registry (PyPI), on this machine; the build itself needs nothing
# but the base image. Each build prints its time and the image's size.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKER_DIR="$ROOT/docker"
INIT_REQUIREMENT="dumb-init>=1.2.5"             # PID 1 of every image (a static binary in a PyPI wheel)

arg_default() {       # arg_default FILE NAME: the default of `ARG NAME=...` in a Dockerfile
    sed -n "s/^ARG $2=//p" "$1" | head -n 1
}

BASE=$(arg_default "$DOCKER_DIR/runtime.Dockerfile" BASE)
PYTHON=$(arg_default "$DOCKER_DIR/runtime.Dockerfile" PYTHON)
GPU_BASE=$(arg_default "$DOCKER_DIR/runtime-gpu.Dockerfile" BASE)
GPU_PYTHON=""
STAND_IN=""
TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)
PREFIX="tasuki/"
GLIBC="2.35"
ARCH=$(uname -m | sed 's/^arm64$/aarch64/')      # macOS says arm64; wheels say aarch64
PYTHON_BIN=python3
LINT_ONLY=0
IMAGES=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
fail() { echo "build.sh: $*" >&2; exit 1; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || fail "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --base) need "$@"; BASE=$2; shift 2 ;;
        --python) need "$@"; PYTHON=$2; shift 2 ;;
        --gpu-base) need "$@"; GPU_BASE=$2; shift 2 ;;
        --gpu-python) need "$@"; GPU_PYTHON=$2; shift 2 ;;
        --gpu-stand-in) need "$@"; STAND_IN=$2; shift 2 ;;
        --tag) need "$@"; TAG=$2; shift 2 ;;
        --prefix) need "$@"; PREFIX=$2; shift 2 ;;
        --glibc) need "$@"; GLIBC=$2; shift 2 ;;
        --arch) need "$@"; ARCH=$2; shift 2 ;;
        --python-bin) need "$@"; PYTHON_BIN=$2; shift 2 ;;
        --lint-only) LINT_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        runtime|operator|gpu) IMAGES+=("$1"); shift ;;
        *) fail "unknown argument '$1': give options and then any of runtime, operator, gpu (see --help)" ;;
    esac
done
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(runtime operator gpu)
if [ -z "$GPU_PYTHON" ]; then
    if [ -n "$STAND_IN" ]; then GPU_PYTHON=$PYTHON
    else GPU_PYTHON=$(arg_default "$DOCKER_DIR/runtime-gpu.Dockerfile" PYTHON); fi
fi
[ -z "$STAND_IN" ] || GPU_BASE=$STAND_IN
[[ "$GLIBC" =~ ^2\.([0-9]+)$ ]] || fail "--glibc '$GLIBC' is not a glibc version such as 2.35"
GLIBC_MINOR=${BASH_REMATCH[1]}
for version in "$PYTHON" "$GPU_PYTHON"; do
    [[ "$version" =~ ^3\.[0-9]+$ ]] || fail "'$version' is not a Python version such as 3.11"
done

# --- lint -----------------------------------------------------------------------------------------
"$PYTHON_BIN" "$DOCKER_DIR/lint.py" "$DOCKER_DIR"/*.Dockerfile || fail "the Dockerfiles break the rules above"
HAS_CHECK=0
if docker build --help 2>/dev/null | grep -q -- '--check'; then HAS_CHECK=1; fi
[ $LINT_ONLY = 1 ] && [ $HAS_CHECK = 0 ] && { echo "build.sh: lint passed (this Docker has no build --check)"; exit 0; }

# --- wheels and contexts ----------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tasuki-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PLATFORMS=()
for ((minor = GLIBC_MINOR; minor >= 5; minor--)); do PLATFORMS+=(--platform "manylinux_2_${minor}_${ARCH}"); done
PLATFORMS+=(--platform "manylinux2014_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux1_${ARCH}")

mkdir -p "$WORK/src" "$WORK/dist"
# the package's inputs only: a build/ left in the repository by an earlier build could add stale modules
tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md runtime operator | tar -C "$WORK/src" -xf -
# a fixed SOURCE_DATE_EPOCH makes the wheel's bytes depend on the sources only, so an unchanged tree hits
# docker's layer cache instead of leaving a new builder image behind at every build
SOURCE_DATE_EPOCH=315532800 "$PYTHON_BIN" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" \
    || fail "pip wheel could not build tasuki from $ROOT"
WHEEL=$(ls "$WORK"/dist/tasuki-*.whl)

context() {           # context NAME PYTHON EXTRA: a build context with the wheels of tasuki[EXTRA] for PYTHON
    local dir="$WORK/context-$1" requirement="$WHEEL${3:+[$3]}"
    mkdir -p "$dir/wheels" "$dir/tasuki"
    "$PYTHON_BIN" -m pip download --quiet --disable-pip-version-check --dest "$dir/wheels" \
        --only-binary=:all: --implementation cp --python-version "$2" "${PLATFORMS[@]}" \
        "$requirement" "$INIT_REQUIREMENT" \
        || fail "pip download found no wheels of $requirement for Python $2 on $ARCH with glibc <= $GLIBC"
    mv "$dir"/wheels/tasuki-*.whl "$dir/tasuki/"
    cp "$DOCKER_DIR/healthcheck.py" "$dir/"
    echo "$dir"
}

build() {             # build NAME DOCKERFILE IMAGE BASE PYTHON EXTRA
    local dir start
    dir=$(context "$1" "$5" "$6")
    if [ $HAS_CHECK = 1 ]; then
        docker build --check --quiet -f "$DOCKER_DIR/$2" --build-arg "BASE=$4" --build-arg "PYTHON=$5" "$dir" \
            || fail "docker build --check found problems in docker/$2"
        [ $LINT_ONLY = 1 ] && return 0
    fi
    echo "build.sh: building $3 from docker/$2 on $4 (Python $5)"
    docker image inspect "$4" >/dev/null 2>&1 || echo "build.sh: $4 is not a local image, so docker will pull it" \
        "(offline: \`docker load\` it first, or give a local image with --base or --gpu-stand-in)"
    start=$SECONDS
    if ! docker build -f "$DOCKER_DIR/$2" --build-arg "BASE=$4" --build-arg "PYTHON=$5" -t "$3" "$dir" \
            >"$dir.log" 2>&1; then
        tail -n 30 "$dir.log" >&2
        fail "docker build of $3 failed (docker/$2, base $4); the end of its output is above"
    fi
    echo "build.sh: built $3 in $((SECONDS - start)) s: $(docker image inspect --format '{{.Size}}' "$3" \
        | awk '{printf "%.0f MB", $1 / 1e6}')"
}

for image in "${IMAGES[@]}"; do
    case "$image" in
        runtime) build runtime runtime.Dockerfile "${PREFIX}runtime:$TAG" "$BASE" "$PYTHON" "" ;;
        operator) build operator operator.Dockerfile "${PREFIX}operator:$TAG" "$BASE" "$PYTHON" operator ;;
        gpu) build gpu runtime-gpu.Dockerfile "${PREFIX}runtime-gpu:$TAG${STAND_IN:+-standin}" "$GPU_BASE" \
                   "$GPU_PYTHON" gpu ;;
    esac
done
