# syntax=docker/dockerfile:1
# Build: docker build -t dagcache .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY cache ./cache
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[uvloop]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dagcache
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels dagcache[uvloop] && rm -rf /wheels
COPY config.example.toml /etc/dagcache/config.example.toml
USER 10001
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["dagcache"]
CMD ["serve"]
