"""The ``dagcache`` command.

Exit codes: 0 success; 1 a dependency or the service failed; 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from proxy import __version__, logs
from proxy.config import Settings, format_validation_error, load_config
from proxy.errors import ConfigError, VersionLookupError

if TYPE_CHECKING:
    from proxy.demo.flavor import Flavor

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dagcache",
        description="Caching reverse proxy for the Apache Airflow UI and REST API.",
    )
    parser.add_argument("--version", action="version", version=f"dagcache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help="TOML config file (default: $DAGCACHE_CONFIG, else built-in defaults)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the proxy"))
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--host", help="listen address (server.host)")
    serve.add_argument("--port", type=int, help="listen port (server.port)")
    serve.add_argument("--upstream", help="Airflow api-server/webserver URL (upstream.url)")

    with_config(sub.add_parser("check", help="validate the config and check upstream, Redis and the metadata DB"))

    versions = with_config(sub.add_parser("versions", help="print the DAG version map"))
    versions.add_argument("--json", action="store_true", help="print JSON instead of a table")

    purge = with_config(sub.add_parser("purge", help="invalidate and delete cached views of every DAG, or of --dag"))
    purge.add_argument("--dag", action="append", metavar="ID", help="only this DAG (repeatable)")

    warm = with_config(sub.add_parser("warm", help="fill the definition views of every DAG through the proxy"))
    warm.add_argument("--proxy", metavar="URL", help="the proxy to warm (default: this config's server address)")
    who = warm.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="an Airflow JWT (or $DAGCACHE_WARM_TOKEN)")
    who.add_argument("--username", help="log in as this user; the password comes from $DAGCACHE_WARM_PASSWORD")
    warm.add_argument("--dag", action="append", metavar="ID", help="only this DAG (repeatable)")
    warm.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")

    demo = with_config(sub.add_parser("demo", help="bring up Airflow with example DAGs and dagcache in front"))
    _demo_arguments(demo)

    from proxy.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="benchmark Airflow UI load: direct vs. dagcache (vs. nginx)"))
    return parser


def _override(settings: Settings, section: str, **values: Any) -> Settings:
    """``settings`` with ``[section]`` keys replaced by command-line values (validated)."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return settings
    current: BaseModel = getattr(settings, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), **values})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command line", (section,))) from None
    return settings.model_copy(update={section: updated})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bench":  # needs no dagcache configuration
        from proxy.bench.cli import run as run_bench

        return run_bench(args)
    try:
        settings = load_config(args.config)
        if args.command == "serve":
            settings = _override(settings, "server", workers=args.workers, host=args.host, port=args.port)
            settings = _override(settings, "upstream", url=args.upstream)
        elif args.command == "demo" and (args.stand_in or args.upstream):
            _check_quick_demo(args)
            settings = _override(settings, "server", port=args.port)
            settings = _override(settings, "admin", port=args.admin_port)
        elif args.command == "demo":
            _demo_flavor(args)  # bad --airflow: one line, before anything is configured
    except ConfigError as exc:
        print(f"dagcache: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log)
    try:
        if args.command == "serve":
            from proxy.supervisor import serve

            return serve(settings)
        if args.command == "check":
            return _check(settings)
        if args.command == "versions":
            return _versions(settings, as_json=args.json)
        if args.command == "demo":
            return _demo(settings, args)
        if args.command == "purge":
            return _purge(settings, args.dag)
        if args.command == "warm":
            return _warm(settings, args)
    except ConfigError as exc:
        print(f"dagcache: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover - argparse restricts it


def _check(settings: Settings) -> int:
    from proxy.checks import render, run_checks

    logging.getLogger().setLevel(logging.WARNING)
    print("configuration ok")
    results = asyncio.run(run_checks(settings))
    print(render(results))
    return EXIT_FAILED if any(r.ok is False for r in results) else EXIT_OK


def _versions(settings: Settings, *, as_json: bool) -> int:
    import time

    from proxy.versions.cli import read_versions
    from proxy.versions.render import as_json as render_json, as_table

    logging.getLogger().setLevel(logging.WARNING)
    try:
        version_map, source, leader = asyncio.run(read_versions(settings))
    except VersionLookupError as exc:
        print(f"dagcache: cannot read versions: {exc}", file=sys.stderr)
        return EXIT_FAILED
    render = render_json if as_json else as_table
    print(render(version_map, source=source, leader=leader, now=time.time()))
    return EXIT_OK


def _purge(settings: Settings, dag_ids: list[str] | None) -> int:
    from cache import CacheUnavailable
    from proxy.app import make_redis
    from proxy.maintenance import purge

    if not settings.redis.url:
        raise ConfigError(
            "dagcache purge needs [redis] url: the embedded store lives inside each dagcache process "
            "(restarting it empties it)"
        )
    logging.getLogger().setLevel(logging.WARNING)

    async def run() -> int:
        client = make_redis(settings.redis)
        try:
            result = await purge(client, settings.redis.key_prefix, dag_ids)
        except CacheUnavailable as exc:
            print(f"dagcache: purge failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            await client.aclose()
        scope = f"{len(dag_ids)} DAG(s)" if dag_ids else "every DAG"
        print(f"purged {scope}: {result.invalidated} DAG(s) keyed anew fleet-wide, {result.deleted} Redis keys deleted")
        if result.unknown:
            print(f"dagcache: not in the fleet's version map: {', '.join(result.unknown)}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK

    return asyncio.run(run())


def _warm(settings: Settings, args: argparse.Namespace) -> int:
    import os

    import aiohttp

    from proxy.maintenance import (
        MaintenanceError,
        ProgressLine,
        default_proxy_url,
        list_dags,
        login,
        warm,
        warm_targets,
    )

    proxy = (args.proxy or default_proxy_url(settings)).rstrip("/")
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    token = args.token or os.environ.get("DAGCACHE_WARM_TOKEN", "")
    password = os.environ.get("DAGCACHE_WARM_PASSWORD", "")
    if args.username and not password:
        raise ConfigError("--username needs the password in $DAGCACHE_WARM_PASSWORD")

    async def run() -> int:
        timeout = aiohttp.ClientTimeout(total=300, connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                bearer = token or await login(session, proxy, args.username, password)
                dags = args.dag or await list_dags(session, proxy, bearer)
            except (MaintenanceError, aiohttp.ClientError, TimeoutError) as exc:
                print(f"dagcache: warm failed: {exc}", file=sys.stderr)
                return EXIT_FAILED
            paths = warm_targets(dags)
            report = await warm(
                session, proxy, bearer, paths, concurrency=args.concurrency, progress=ProgressLine("warm")
            )
        print(f"warmed {len(dags)} DAG(s): {report.line()}")
        for failure in report.failures[:10]:
            print(f"  {failure}", file=sys.stderr)
        return EXIT_FAILED if report.failures else EXIT_OK

    return asyncio.run(run())


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    from proxy.demo.backends import DEFAULT_POSTGRES, DEFAULT_REDIS

    demo.add_argument(
        "--airflow",
        metavar="MAJOR",
        help="the Airflow to bring up: 3 (default, Airflow 3.3 api-server) or 2 (Airflow 2.11 webserver)",
    )
    demo.add_argument(
        "--dir",
        help="where everything lives (default ~/.cache/dagcache/demo; for --airflow 2, "
        "~/.cache/dagcache/demo-airflow2)",
    )
    demo.add_argument("--port", type=_port, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--admin-port", type=_port, default=9090, help="admin port (default 9090)")
    demo.add_argument("--host", default="127.0.0.1", help="listen address of both (default 127.0.0.1)")
    db = demo.add_mutually_exclusive_group()
    db.add_argument("--postgres", default=DEFAULT_POSTGRES, metavar="URL", help="where to create the DB (%(default)s)")
    db.add_argument("--sqlite", action="store_true", help="use SQLite even when PostgreSQL answers")
    store = demo.add_mutually_exclusive_group()
    store.add_argument("--redis", default=DEFAULT_REDIS, metavar="URL", help="used when it answers (%(default)s)")
    store.add_argument("--no-redis", action="store_true", help="use the embedded store even when Redis answers")
    demo.add_argument(
        "--clean",
        action="store_true",
        help="remove the demo directory (and its database), then exit; with neither --dir nor --airflow, "
        "the default directories of both",
    )
    demo.add_argument("--stand-in", action="store_true", help="quick mode: a built-in stand-in instead of Airflow")
    demo.add_argument("--upstream", metavar="URL", help="quick mode in front of URL instead of the stand-in")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def _check_quick_demo(args: argparse.Namespace) -> None:
    if args.airflow is not None:
        raise ConfigError("--airflow brings up a real Airflow: it does not go with --stand-in or --upstream")


def _demo_flavor(args: argparse.Namespace) -> Flavor:
    """The :class:`proxy.demo.flavor.Flavor` of ``--airflow`` (:class:`ConfigError` naming the choices)."""
    from proxy.demo.flavor import parse_major

    try:
        return parse_major(args.airflow)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy.demo import DemoError
    from proxy.demo.flavor import clean_targets
    from proxy.demo.stack import DemoOptions, clean_all, run_stack

    if args.stand_in or args.upstream:
        from proxy.demo.standin import run_demo

        return run_demo(settings, upstream=args.upstream)
    flavor = _demo_flavor(args)
    if args.clean:
        return clean_all(clean_targets(args.dir, args.airflow))
    options = DemoOptions(
        flavor=flavor,
        directory=Path(args.dir) if args.dir is not None else flavor.default_dir,
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        postgres=args.postgres,
        sqlite=args.sqlite,
        redis=args.redis,
        no_redis=args.no_redis,
    )
    try:
        return run_stack(settings, options)
    except DemoError as exc:
        print(f"dagcache demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
