# syntax=docker/dockerfile:1
# The aicenter-operator image: the project's wheel in a slim Python runtime, run as a non-root user.
#
#   docker build -t <registry>/<path>/aicenter-operator:0.1.0 .
#   docker push <registry>/<path>/aicenter-operator:0.1.0
#   helm install aicenter-operator charts/aicenter-operator -n aicenter-system --create-namespace \
#     --set image.repository=<registry>/<path>/aicenter-operator
#
# Needs BuildKit (default in current Docker; `DOCKER_BUILDKIT=1` on older ones) and access to a
# Python package index for the build stage. See docs/install.md.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the project's wheel and the wheels of its dependencies ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY operator/ ./operator/
RUN python -m pip wheel --wheel-dir /wheels .

# ---- runtime: install from those wheels only (no index), no build tools, no source tree ------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels aicenter-operator \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot \
    && aicenter-operator run --help >/dev/null
# The chart runs it with a read-only root filesystem and an emptyDir on /tmp (HOME).
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["aicenter-operator", "run"]
