# syntax=docker/dockerfile:1
# The exporter image: the project's wheel in a virtual environment on a slim Python, run as a non-root user.
#   docker build -t nats-jetstream-exporter .
#   docker run --rm -p 10422:10422 nats-jetstream-exporter --nats-url nats://nats.example:4222
# tests/test_image_recipe.py replays the build and install commands below on the test machine (no Docker
# engine there) and runs hadolint on this file: change a command here and that test points at it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project's wheel, then wheels for all of its dependencies --------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m build --wheel --outdir /dist . \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels /dist/*.whl

# --- runtime: no compilers, no build frontend, no pip cache; installed offline from the wheels above ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="nats-jetstream-exporter" \
      org.opencontainers.image.description="Prometheus exporter for NATS JetStream" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXPORTER_HEALTHCHECK_URL=http://127.0.0.1:10422/healthz
# The wheels are bind-mounted from the build stage, so none of them ends up in a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels nats-jetstream-exporter \
 && groupadd --system --gid 10422 exporter \
 && useradd --system --uid 10422 --gid 10422 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin exporter
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10422:10422
EXPOSE 10422
# Python only (no curl in a slim image). Plain HTTP on loopback by default; with a web config that turns
# on TLS set EXPORTER_HEALTHCHECK_URL to https://127.0.0.1:10422/healthz: the check then skips certificate
# verification, because the certificate names the service, not 127.0.0.1. /healthz needs no basic auth.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['EXPORTER_HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context())"]
ENTRYPOINT ["nats-jetstream-exporter"]
