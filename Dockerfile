# The Shadowing worker (`shadowing-worker`, the base entry point) against TEMPORAL_ADDRESS and AWS (deploy/DEPLOY.md).
#   docker build -t shadowing-worker .
# The base image is pinned to an exact tag (tests/unit/test_compose.py checks it); runs as a non-root user.
FROM python:3.11.14-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group shadowing

# .dockerignore keeps the venv, git history, state, caches and tests out of the context. The base package only:
# no CLI (the `cli` extra), no emulator or dev server (`local`), no test server (`dev`), at the versions CI tested.
COPY . /tmp/src
RUN pip install -c /tmp/src/constraints.txt /tmp/src && rm -rf /tmp/src

USER shadowing
WORKDIR /home/shadowing
# Prometheus metrics: inside a container they must listen on every interface to be published.
ENV SHADOWING_METRICS_BIND=0.0.0.0:9464 \
    SHADOWING_LOG_FORMAT=json
EXPOSE 9464

ENTRYPOINT ["shadowing-worker"]
