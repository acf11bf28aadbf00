# syntax=docker/dockerfile:1
# Build:  docker build -t dagcache .                       (extras: --build-arg EXTRAS=uvloop,brotli,mysql)
# Run:    docker run -p 8080:8080 -p 9090:9090 -e DAGCACHE_UPSTREAM__URL=http://airflow:8080 dagcache
# Runs as uid 10001 and writes nothing outside /tmp, so it works with a read-only root filesystem.
ARG PYTHON=python:3.11-slim

FROM ${PYTHON} AS build
ARG EXTRAS=uvloop,brotli
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY cache ./cache
RUN pip wheel --wheel-dir /wheels ".[${EXTRAS}]"

FROM ${PYTHON}
ARG EXTRAS=uvloop,brotli
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 dagcache \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin dagcache
# The wheels are bind-mounted from the build stage, so they never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "dagcache[${EXTRAS}]"
COPY config.example.toml /etc/dagcache/config.example.toml
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
# Liveness of the admin listener (stdlib only: no curl in the image). Follows DAGCACHE_ADMIN__PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DAGCACHE_ADMIN__PORT', '9090'), timeout=2)"]
ENTRYPOINT ["dagcache"]
CMD ["serve"]
