# alertd container image.
#
#   Build:  buildah bud --format docker -t alertd .       (or: docker build -t alertd .)
#   Base:   any official-style Python image: --build-arg PYTHON_IMAGE=python:3.11-slim
#   Check:  deploy/image-check.sh builds this file for real and runs `alertd check-config` in it.
#
# Stage 1 builds alertd's wheel and installs it, with its pinned dependencies, into a virtualenv.
# Stage 2 is the slim base plus that virtualenv: no compiler, no pip, no build cache.
ARG PYTHON_IMAGE=python:3.12-slim

# checkov:skip=CKV_DOCKER_7: checkov does not expand ARGs; the base is PYTHON_IMAGE, whose default above carries a version tag (deploy/image-check.sh fails on an untagged or :latest default)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Everything the wheel is built from (.dockerignore keeps the rest of the tree out).
COPY pyproject.toml README.md ./
COPY alertd/ alertd/
COPY deploy/constraints.txt deploy/constraints.txt
# /wheels gets alertd's wheel (built by hatchling from pyproject.toml) and its dependencies' wheels,
# at the versions in deploy/constraints.txt; the runtime virtualenv is installed from those wheels only.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --constraint deploy/constraints.txt --wheel-dir /wheels . \
    && python -m venv /opt/alertd \
    && /opt/alertd/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/alertd-*.whl \
    && /opt/alertd/bin/pip uninstall --yes setuptools pip \
    && /opt/alertd/bin/alertd --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="alertd" \
      org.opencontainers.image.description="Sidecar that turns upstream failures into throttled, privacy-safe Sentry alerts" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged UID/GID that the Kubernetes securityContext names too (runAsUser: 10001).
# --no-create-home: nothing in alertd writes to disk, so the root filesystem can be read-only.
RUN groupadd --gid 10001 alertd \
    && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin alertd
COPY --from=build /opt/alertd /opt/alertd
ENV PATH=/opt/alertd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ALERTD_LISTEN=127.0.0.1:9180 \
    ALERTD_METRICS_LISTEN=0.0.0.0:9181
USER 10001:10001
WORKDIR /
# 9180: ingest API (POST /v1/failures), bound to 127.0.0.1: only containers of the same pod reach it.
# 9181: /metrics, /healthz, /readyz for Prometheus and the kubelet.
EXPOSE 9180 9181
# No curl in the image: the venv's Python asks /healthz itself (exit 1 on any error or non-2xx).
# It assumes the default metrics port: override the health check if you move ALERTD_METRICS_LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9181/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["alertd", "serve"]
