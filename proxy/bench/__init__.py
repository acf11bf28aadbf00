"""``dagcache bench``: a side-by-side load benchmark of the Airflow 3 UI, direct vs. dagcache (vs. nginx).

Pure modules (no I/O): :mod:`~proxy.bench.stats`, :mod:`~proxy.bench.mix`, :mod:`~proxy.bench.report`,
:mod:`~proxy.bench.nginxconf`, :mod:`~proxy.bench.audit`. The rest drive sockets, processes and the DB.
"""

from __future__ import annotations

from proxy.errors import ProxyError


class BenchError(ProxyError):
    """The benchmark cannot run (bad arguments, unreachable target, failed login); ``str()`` is one line."""
