"""A stand-alone process running one VersionService against a real metadata DB and Redis; it prints its
map as JSON lines so that tests can watch several processes at once (leader failover, monotonicity).

    python -m tests.versions_probe DB_URL REDIS_URL PREFIX NAME
"""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis

from proxy.airflow.source import SqlVersionSource
from proxy.config import DatabaseConfig, VersionsConfig
from proxy.database import make_engine
from proxy.versions.redis_store import RedisVersionStore
from proxy.versions.service import VersionService

CONFIG = VersionsConfig(poll_interval=0.2, lease_ttl=1.5, state_max_age=0, max_version_age=5.0)


async def main(db_url: str, redis_url: str, prefix: str, name: str) -> None:
    engine = make_engine(DatabaseConfig(url=db_url))
    client = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    service = VersionService(CONFIG, SqlVersionSource(engine).poll, RedisVersionStore(client, prefix), instance=name)
    await service.start()
    try:
        while True:
            current = service.current
            if current is not None:
                line = {
                    "name": name,
                    "leader": service.is_leader,
                    "g": current.generation,
                    "global": current.global_version,
                    "dags": {k: [v.definition, v.state] for k, v in current.dags.items()},
                }
                print(json.dumps(line), flush=True)
            await asyncio.sleep(0.05)
    finally:
        await service.aclose()
        await client.aclose()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
