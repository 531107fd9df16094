# syntax=docker/dockerfile:1
# finetune-watcher as a container: see docs/deploy.md ("Container").
#   docker build -t finetune-watcher .
# The base image is pinned to a patch release; pin its digest too for reproducible builds
# (docker buildx imagetools inspect python:3.11.17-slim-bookworm).
# Any image with python3 (>= 3.11) and its venv module works as PYTHON_IMAGE, e.g. a
# Debian 12 root with python3-venv (.ci/container-test builds from one): both stages use
# the same base, so the venv's interpreter link resolves in the final stage too.
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# --- build: the project and its dependencies, in a venv at its final path ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Extra pip options, e.g. "--no-index --find-links /wheels" for an offline build from a
# wheelhouse mounted into the build (podman build -v ...); empty by default.
ARG PIP_OPTIONS=""
WORKDIR /src
RUN python3 -m venv /opt/finetune-watcher
COPY pyproject.toml README.md LICENSE ./
COPY watcher ./watcher
# pip byte-compiles what it installs: the image runs with a read-only root and
# PYTHONDONTWRITEBYTECODE, so every start (and every HEALTHCHECK) uses these .pyc files.
# pip and setuptools are removed afterwards: nothing installs anything at run time.
# hadolint ignore=SC2086
RUN /opt/finetune-watcher/bin/pip install --no-cache-dir ${PIP_OPTIONS} . \
 && /opt/finetune-watcher/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv, a system user, nothing else ---------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="finetune-watcher" \
      org.opencontainers.image.description="Watches Cohere fine-tuned models and notifies on any apprise channel when they become ready or fail." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deploy.md (Container)"
# A fixed UID/GID so volume and secret ownership can be set from the host.
# The placeholder config lets the daemon run on WATCHER_* variables alone; mount a real
# watcher.yaml over it (or the whole /etc/finetune-watcher directory).
RUN groupadd --system --gid 10001 finetune-watcher \
 && useradd --system --uid 10001 --gid finetune-watcher --no-create-home \
      --home-dir /var/lib/finetune-watcher --shell /usr/sbin/nologin finetune-watcher \
 && install -d -m 0700 -o finetune-watcher -g finetune-watcher /var/lib/finetune-watcher \
 && install -d -m 0755 /etc/finetune-watcher \
 && printf '%s\n' \
      '# Placeholder: mount your watcher.yaml here (docs/deploy.md); WATCHER_* variables override it.' \
      '{}' > /etc/finetune-watcher/watcher.yaml
COPY --from=build /opt/finetune-watcher /opt/finetune-watcher
# The state defaults to /var/lib/finetune-watcher/watcher.db (the volume) because the
# configuration is /etc/finetune-watcher/watcher.yaml (watcher/paths.py): no
# WATCHER_STATE__PATH, so state.url (PostgreSQL) works in the image as it is.
# The health server listens on loopback: enough for HEALTHCHECK (it runs inside the
# container). To let Prometheus scrape /metrics, set WATCHER_HEALTH__LISTEN=0.0.0.0:9464.
ENV PATH=/opt/finetune-watcher/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHER_CONFIG=/etc/finetune-watcher/watcher.yaml \
    WATCHER_HEALTH__LISTEN=127.0.0.1:9464
VOLUME ["/var/lib/finetune-watcher"]
# The health and metrics endpoints (/healthz, /readyz, /metrics); loopback unless
# WATCHER_HEALTH__LISTEN says otherwise.
EXPOSE 9464
WORKDIR /var/lib/finetune-watcher
USER 10001:10001
# The daemon handles SIGTERM itself, also as PID 1 (no --init needed).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["finetune-watcher", "healthcheck"]
ENTRYPOINT ["finetune-watcher"]
CMD ["run"]
