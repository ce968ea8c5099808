# The tasuki runtime image (CPU): the `tasuki` command that the operator's head and worker pods run
# (`tasuki start --head --block`, `tasuki start --address $(TASUKI_ADDRESS) --block`) and the library
# their tasks import. Build it with docker/build.sh, which makes the build context:
#   wheels/          the dependency wheels, for the base image's Python (pip download --only-binary)
#   tasuki/          the tasuki wheel, built from the repository (pip wheel)
#   healthcheck.py   docker/healthcheck.py
# Everything is installed from the context with --no-index: the build reaches no registry, so a
# local base image is all it needs.
#
# BASE is any Debian-like image with python3 and its venv module, at the Python version of the wheels
# (PYTHON): the default python:3.11-slim-bookworm, or a local one (.ci/setup-docker.sh makes
# tasuki-base:bookworm with debootstrap). The builder makes a virtual environment in /opt/tasuki and
# the final stage copies it onto a fresh BASE: no pip, no wheels, no compilers there.
#
# Run: PID 1 is dumb-init (a static binary from its PyPI wheel), which passes SIGTERM to
# `tasuki start --block`; that stops the head and node agents and exits 0. The user is uid 10001,
# numeric so that Kubernetes' runAsNonRoot can check it. The object store lives in /dev/shm: give
# the container room there (`docker run --shm-size`, an emptyDir with medium Memory in a pod).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS builder
ARG PYTHON=3.11
RUN python3 -c 'import os, sys; have, want = "%d.%d" % sys.version_info[:2], os.environ["PYTHON"]; \
        sys.exit(have != want and f"base image Python {have}, context wheels for {want}: use build.sh --python {have}")' \
 && python3 -m venv /opt/tasuki
COPY wheels/ /wheels/
RUN /opt/tasuki/bin/pip install --no-index --no-cache-dir --disable-pip-version-check /wheels/*.whl
COPY tasuki/ /tasuki/
RUN /opt/tasuki/bin/pip install --no-index --no-cache-dir --disable-pip-version-check --no-deps /tasuki/*.whl \
 && /opt/tasuki/bin/pip check \
 && /opt/tasuki/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE}
COPY --from=builder /opt/tasuki /opt/tasuki
COPY healthcheck.py /opt/tasuki/healthcheck.py
RUN useradd --uid 10001 --user-group --create-home --shell /bin/sh tasuki
ENV PATH=/opt/tasuki/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/tasuki
# TASUKI_* variables configure `tasuki start` (see its --help): TASUKI_TOKEN, TASUKI_NODE_IP_ADDRESS...
EXPOSE 6380 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]
ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--"]
CMD ["tasuki", "start", "--head", "--block"]
