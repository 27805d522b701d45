# syntax=docker/dockerfile:1
# triage: the scorer, retrain job, trainer and sample producer in one slim, non-root image.
# Dependencies come from pyproject.toml (the project's own metadata): the builder stage
# resolves them into wheels, the runtime stage installs only those wheels, offline.
# EXTRAS: the pyproject extras to install. The default, train,s3,quality, is what docker-compose.yml
# needs (train-init and retrain fit models in this image; the retrain job runs the shipped label-quality
# defaults: crowd-kit, cleanlab, krippendorff) plus S3 registries; a scorer-only image needs only the core:
#   docker build --build-arg EXTRAS= -t triage-scorer .
# Without quality, contested labels take a plain majority and no relabels are sent (docs/guide/label-quality.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG EXTRAS=train,s3,quality

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY triage ./triage
COPY consumers ./consumers
RUN pip wheel --wheel-dir /wheels .${EXTRAS:+"[$EXTRAS]"}

FROM ${PYTHON_IMAGE}
ARG EXTRAS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TRIAGE_METRICS_HOST=0.0.0.0 TRIAGE_METRICS_PORT=8000
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels triage${EXTRAS:+"[$EXTRAS]"} \
 && groupadd --system --gid 10001 triage \
 && useradd --system --uid 10001 --gid triage --home-dir /nonexistent --shell /usr/sbin/nologin triage \
 && mkdir -p /registry /opt/triage/data \
 && chown triage:triage /registry
# The bundled digits dataset: what the compose stack trains v1 on and replays as traffic.
COPY triage/examples/digits_reference.npz /opt/triage/data/digits.npz
USER 10001:10001
WORKDIR /opt/triage
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRIAGE_METRICS_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["triage"]
CMD ["serve", "--help"]
