# syntax=docker/dockerfile:1
# finetune-watcher as a container: see docs/deploy.md ("Container").
#   docker build -t finetune-watcher .
# The base image is pinned to a patch release; pin its digest too for reproducible builds
# (docker buildx imagetools inspect python:3.11.17-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# --- build: the project and its dependencies, in a venv at its final path ---------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/finetune-watcher
COPY pyproject.toml README.md ./
COPY watcher ./watcher
# pip byte-compiles what it installs: the image runs with a read-only root and
# PYTHONDONTWRITEBYTECODE, so every start (and every HEALTHCHECK) uses these .pyc files.
# pip and setuptools are removed afterwards: nothing installs anything at run time.
RUN /opt/finetune-watcher/bin/pip install --no-cache-dir . \
 && /opt/finetune-watcher/bin/pip uninstall --yes pip setuptools

# --- runtime: the venv, a system user, nothing else ---------------------------------------
FROM ${PYTHON_IMAGE}
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
# The health server listens on loopback: enough for HEALTHCHECK (it runs inside the
# container). To let Prometheus scrape /metrics, set WATCHER_HEALTH__LISTEN=0.0.0.0:9464.
ENV PATH=/opt/finetune-watcher/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WATCHER_CONFIG=/etc/finetune-watcher/watcher.yaml \
    WATCHER_STATE__PATH=/var/lib/finetune-watcher/watcher.db \
    WATCHER_HEALTH__LISTEN=127.0.0.1:9464
VOLUME ["/var/lib/finetune-watcher"]
WORKDIR /var/lib/finetune-watcher
USER 10001:10001
# The daemon handles SIGTERM itself, also as PID 1 (no --init needed).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["finetune-watcher", "healthcheck"]
ENTRYPOINT ["finetune-watcher"]
CMD ["run"]
