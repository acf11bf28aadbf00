"""dagcache: a caching reverse proxy for the Apache Airflow UI and REST API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dagcache")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
