# The tasuki operator image: `tasuki-operator` (the console script of tasuki's `operator` extra), which
# turns Cluster resources into head and worker pods. Build it with docker/build.sh, which makes the
# build context (see runtime.Dockerfile: wheels/, tasuki/, healthcheck.py; here the wheels of
# tasuki[operator]). Everything is installed from the context with --no-index.
#
# The kubernetes client ships an asyncio copy of itself (kubernetes/aio, ~70 MB of the ~330 MB image)
# that nothing here imports (kube.py uses the synchronous client, kopf its own aiohttp calls): the
# builder deletes it.
#
# BASE: any Debian-like image with python3 and its venv module at the wheels' Python (PYTHON; the
# operator extra needs 3.11 or newer, as kopf does). The final stage holds the virtual environment
# only: no pip, no wheels, no compilers. PID 1 is dumb-init; the user is uid 10001. The HEALTHCHECK asks
# the operator's /healthz on its default metrics port, 8080: give `docker run --health-cmd` another URL
# if you pass --metrics-port. Arguments go after the image name: `docker run IMAGE --namespace team-a`.
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
 && /opt/tasuki/bin/pip uninstall --yes --quiet pip setuptools \
 && rm -rf /opt/tasuki/lib/python3*/site-packages/kubernetes/aio

FROM ${BASE}
COPY --from=builder /opt/tasuki /opt/tasuki
COPY healthcheck.py /opt/tasuki/healthcheck.py
RUN useradd --uid 10001 --user-group --create-home --shell /bin/sh tasuki
ENV PATH=/opt/tasuki/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/tasuki
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--", "tasuki-operator"]
CMD []
