"""The nginx ``proxy_cache`` configuration the benchmark measures as the industry baseline (pure).

The cache key contains the ``Authorization`` and ``Cookie`` headers, so two users never share an entry
(the same isolation as dagcache's default ``cache.scope = "credential"``). It is a plain time-based
micro-cache: an entry is served for ``ttl`` seconds (whole seconds, at least 1: nginx's resolution)
whatever happens in Airflow, so nginx may answer up to ``ttl`` stale. ``proxy_cache_lock`` gives one
upstream fill per key at a time, like dagcache's single-flight. Responses that set a cookie (Airflow's
token refresh) are never stored (nginx's default).
"""

from __future__ import annotations

from urllib.parse import urlsplit

CACHE_KEY = "$scheme$request_method$host$request_uri|$http_authorization|$http_cookie"
"""The ``proxy_cache_key``: URL plus credentials, so users never share entries."""


def upstream_address(url: str) -> str:
    """``http://host:port[/...]`` -> ``host:port`` (nginx's ``server`` syntax); only plain HTTP."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--nginx needs an http:// upstream URL, got {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"--nginx needs an upstream URL without a path, got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


def nginx_config(
    *,
    upstream: str,
    port: int,
    workdir: str,
    ttl: float = 5.0,
    cpu: int | None = None,
    user: str | None = None,
) -> str:
    """An ``nginx.conf`` for one worker on ``127.0.0.1:port`` in front of ``upstream`` (a URL).

    Everything nginx writes (pid, logs, temp files, cache) stays under ``workdir``; ``cpu`` pins the
    worker to that core; ``user`` is needed when nginx is started as root."""
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    if ttl <= 0:
        raise ValueError(f"the nginx cache ttl must be positive, got {ttl}")
    valid = f"{max(1, round(ttl))}s"  # nginx keeps cache validity in whole seconds
    lines = [
        "# Written by `dagcache bench --nginx`; removed with its directory.",
        *([f"user {user};"] if user else []),
        "worker_processes 1;",
        *([f"worker_cpu_affinity {1 << cpu:b};"] if cpu is not None else []),
        "daemon off;",
        f"pid {workdir}/nginx.pid;",
        f"error_log {workdir}/error.log warn;",
        "events { worker_connections 8192; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {workdir}/tmp/client_body;",
        f"    proxy_temp_path {workdir}/tmp/proxy;",
        f"    fastcgi_temp_path {workdir}/tmp/fastcgi;",
        f"    uwsgi_temp_path {workdir}/tmp/uwsgi;",
        f"    scgi_temp_path {workdir}/tmp/scgi;",
        f"    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=dagcache_bench:32m max_size=2g"
        " inactive=10m use_temp_path=off;",
        f"    upstream airflow {{ server {upstream_address(upstream)}; keepalive 64; }}",
        "    server {",
        f"        listen 127.0.0.1:{port} backlog=4096;",
        "        location / {",
        "            proxy_pass http://airflow;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $http_host;",
        "            proxy_buffers 64 64k;",
        "            proxy_cache dagcache_bench;",
        "            proxy_cache_methods GET HEAD;",
        f'            proxy_cache_key "{CACHE_KEY}";',
        f"            proxy_cache_valid 200 {valid};",
        "            proxy_cache_lock on;",
        "            proxy_cache_lock_timeout 30s;",
        "            add_header X-Cache $upstream_cache_status always;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
