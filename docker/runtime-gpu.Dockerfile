# The tasuki runtime image for NVIDIA GPUs: runtime.Dockerfile on a CUDA 12 runtime base, with
# cupy-cuda12x (tasuki's `gpu` extra). Build it with docker/build.sh (the context: wheels/ of
# tasuki[gpu] for the base's Python, tasuki/, healthcheck.py), installed with --no-index.
#
# BASE: an image with the CUDA 12 runtime libraries (cudart, nvrtc, cuBLAS... as nvidia/cuda's
# `runtime` flavour has; the driver comes from the host through the NVIDIA container toolkit). Where
# the base has no python3 with venv (nvidia/cuda has none), the `python` stage installs the
# distribution's (Ubuntu 22.04: Python 3.10, so PYTHON=3.10): that one step needs the base's package
# mirror; everything else comes from the build context. With a stand-in base that has python3 (see
# build.sh --gpu-stand-in) every step runs here too, the CUDA libraries aside.
#
# Run as the CPU image (dumb-init as PID 1, uid 10001, the same HEALTHCHECK), with the GPUs given to the
# container (`docker run --gpus`, nvidia.com/gpu limits in a pod); the node agent counts them with
# nvidia-smi, which the container toolkit mounts.
ARG BASE=nvidia/cuda:12.6.3-runtime-ubuntu22.04

FROM ${BASE} AS python
RUN if python3 -m venv /tmp/venv-probe >/dev/null 2>&1; then rm -rf /tmp/venv-probe; else \
        apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
     && rm -rf /var/lib/apt/lists/* /tmp/venv-probe; fi

FROM python AS builder
ARG PYTHON=3.10
RUN python3 -c 'import os, sys; have, want = "%d.%d" % sys.version_info[:2], os.environ["PYTHON"]; \
        sys.exit(have != want and f"base image Python {have}, context wheels for {want}: use build.sh --gpu-python {have}")' \
 && python3 -m venv /opt/tasuki
COPY wheels/ /wheels/
RUN /opt/tasuki/bin/pip install --no-index --no-cache-dir --disable-pip-version-check /wheels/*.whl
COPY tasuki/ /tasuki/
RUN /opt/tasuki/bin/pip install --no-index --no-cache-dir --disable-pip-version-check --no-deps /tasuki/*.whl \
 && /opt/tasuki/bin/pip check \
 && /opt/tasuki/bin/pip uninstall --yes --quiet pip setuptools

FROM python
COPY --from=builder /opt/tasuki /opt/tasuki
COPY healthcheck.py /opt/tasuki/healthcheck.py
RUN useradd --uid 10001 --user-group --create-home --shell /bin/sh tasuki
ENV PATH=/opt/tasuki/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/tasuki
EXPOSE 6380 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]
ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--"]
CMD ["tasuki", "start", "--head", "--block"]
