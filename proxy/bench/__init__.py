"""``dagcache bench``: a side-by-side load benchmark of the Airflow UI, direct vs. dagcache (vs. nginx).

Airflow 3 (api-server) and Airflow 2 (webserver) each have a request mix and an ``--audit``: :mod:`~proxy.bench.mix`
and :mod:`~proxy.bench.audit` / :mod:`~proxy.bench.auditor` for 3, :mod:`~proxy.bench.mix2` and
:mod:`~proxy.bench.audit2` / :mod:`~proxy.bench.auditor2` for 2; :mod:`~proxy.bench.airflow` is the seam.

Pure modules (no I/O): :mod:`~proxy.bench.stats`, :mod:`~proxy.bench.mix`, :mod:`~proxy.bench.mix2`,
:mod:`~proxy.bench.report`, :mod:`~proxy.bench.nginxconf`, :mod:`~proxy.bench.audit`, :mod:`~proxy.bench.audit2`.
The rest drive sockets, processes and the DB.
"""

from __future__ import annotations

from proxy.errors import ProxyError


class BenchError(ProxyError):
    """The benchmark cannot run (bad arguments, unreachable target, failed login); ``str()`` is one line."""


class UsageError(BenchError):
    """Bad arguments (exit code 2), also when found only once the upstream's Airflow version is known."""
