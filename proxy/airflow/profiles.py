"""Which upstream profile (route table and authorization rules) serves a request: forced by ``[upstream] profile``
or, with ``auto``, the one of the Airflow major version whose schema the version map was polled from. The same
dagcache binary thus serves an Airflow 3 api-server or an Airflow 2 webserver. Pure."""

from __future__ import annotations

from typing import Final

from proxy.airflow import routes2, routes3
from proxy.routes import RouteTable
from proxy.versions.model import VersionMap

TABLES: Final = {routes2.PROFILE: routes2.TABLE, routes3.PROFILE: routes3.TABLE}


def major_of_map(current: VersionMap | None) -> int | None:
    """The Airflow major version the map was polled from (its ``schema`` is ``"<major>:<revision>"``)."""
    if current is None:
        return None
    head = current.schema.partition(":")[0]
    return int(head) if head.isdigit() else None


def table_for(profile: str, current: VersionMap | None, default: RouteTable) -> RouteTable:
    """The route table of ``profile`` ("airflow2", "airflow3"), or for "auto" the one of the map's schema
    (``default`` until a map is known)."""
    forced = TABLES.get(profile)
    if forced is not None:
        return forced
    major = major_of_map(current)
    if major == 2:
        return routes2.TABLE
    if major == 3:
        return routes3.TABLE
    return default
