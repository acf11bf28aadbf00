"""The version map in Redis: the leader lease, fenced writes, read-your-writes bumps, and reads.

Every write is one Lua script, so it is atomic, and carries a check:

* the leader's write succeeds only while it still holds the lease token *and* the stored generation is
  the one it last saw (optimistic concurrency): a leader that lost its lease can never overwrite the map,
  and a bump made by another process in between is never lost (the leader reloads and re-applies);
* a bump (any process, after a successful write through the proxy) raises the DAGs' state versions to
  ``max(generation + 1, now)`` in place and publishes the delta; ``dagcache purge`` raises their definition
  versions the same way (every cached view of those DAGs gets a new key on every process at once).

Redis errors are mapped to :class:`cache.CacheUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

from cache import CacheUnavailable
from cache.redis_store import REDIS_ERRORS, RedisClient, cluster_ready, describe_redis_error
from proxy.versions.codec import (
    DAG_PREFIX,
    Keys,
    decode_leader_state,
    decode_map,
    encode_beat,
    encode_delta,
    encode_fingerprint,
    encode_version,
    meta_fields,
)
from proxy.versions.model import Delta, LeaderState, VersionMap

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: versions, fingerprints, revoked, leader. ARGV: token, expected generation ('' = replace whatever is
# stored: a new leader that found no readable map),
# payload JSON, channel, message ('' = publish nothing).
_WRITE = """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
local current = redis.call('HGET', KEYS[1], '_g')
if ARGV[2] ~= '' and (current or '') ~= ARGV[2] then return -2 end
local p = cjson.decode(ARGV[3])
if p.reset then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
for k, v in pairs(p.meta) do redis.call('HSET', KEYS[1], k, v) end
for k, v in pairs(p.set) do redis.call('HSET', KEYS[1], 'd:' .. k, v) end
for _, k in ipairs(p.del) do
  redis.call('HDEL', KEYS[1], 'd:' .. k)
  redis.call('HDEL', KEYS[2], k)
end
for k, v in pairs(p.fp) do redis.call('HSET', KEYS[2], k, v) end
for k, v in pairs(p.radd) do redis.call('HSET', KEYS[3], k, v) end
for _, k in ipairs(p.rdel) do redis.call('HDEL', KEYS[3], k) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""

# KEYS: versions. ARGV: now (ms), listing ('1'/'0'), channel, dag ids...
_BUMP = """
local g = redis.call('HGET', KEYS[1], '_g')
if not g then return 0 end
local previous = tonumber(g)
local tick = math.max(previous + 1, tonumber(ARGV[1]))
local ts = string.format('%d', tick)
local listing = string.sub(ARGV[2], -1) == '1'
local set = {}
local n = 0
for i = 4, #ARGV do
  local v = redis.call('HGET', KEYS[1], 'd:' .. ARGV[i])
  if v then
    local definition = string.match(v, '^(%d+):')
    if string.sub(ARGV[2], 1, 1) == 'd' then definition = ts end
    local value = definition .. ':' .. ts .. ':' .. ARGV[1]
    redis.call('HSET', KEYS[1], 'd:' .. ARGV[i], value)
    set[ARGV[i]] = value
    n = n + 1
  end
end
if n == 0 and not listing then return 0 end
redis.call('HSET', KEYS[1], '_g', ts)
local global = redis.call('HGET', KEYS[1], '_global')
if listing then
  global = ts
  redis.call('HSET', KEYS[1], '_global', ts)
end
local message = cjson.encode({
  t = 'delta', g = ts, pg = g, global = global, schema = redis.call('HGET', KEYS[1], '_schema'),
  polled_at = tonumber(redis.call('HGET', KEYS[1], '_polled_at')) / 1000,
  set = set, del = {}, radd = {}, rdel = {}, gc = listing, sc = false
})
redis.call('PUBLISH', ARGV[3], message)
return 1
"""

WRITE_OK, WRITE_NOT_LEADER, WRITE_CONFLICT = 1, -1, -2


@contextmanager
def map_redis_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(describe_redis_error(exc)) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisVersionStore:
    """Lease, map and change channel in one Redis (standalone, Sentinel or Cluster via redis-py)."""

    def __init__(self, client: RedisClient, prefix: str = "dagcache") -> None:
        self._client = client
        self.keys = Keys(prefix)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._write = client.register_script(_WRITE)
        self._bump = client.register_script(_BUMP)

    @property
    def client(self) -> RedisClient:
        return self._client

    async def try_acquire(self, instance: str, ttl_ms: int) -> str | None:
        """The lease token if this instance became leader, else ``None``."""
        with map_redis_errors():
            fence = await self._client.incr(self.keys.fence)
            token = f"{instance}:{fence}"
            if await self._client.set(self.keys.leader, token, nx=True, px=ttl_ms):
                return token
            return None

    async def renew(self, token: str, ttl_ms: int) -> bool:
        with map_redis_errors():
            return bool(await self._renew(keys=[self.keys.leader], args=[token, ttl_ms]))

    async def release(self, token: str) -> None:
        with map_redis_errors():
            await self._release(keys=[self.keys.leader], args=[token])

    async def leader(self) -> str | None:
        with map_redis_errors():
            value = await self._client.get(self.keys.leader)
        return None if value is None else _text(value)

    async def load_map(self) -> VersionMap | None:
        with map_redis_errors():
            fields = await self._client.hgetall(self.keys.versions)
            revoked = await self._client.hgetall(self.keys.revoked)
        return decode_map(
            {_text(k): _text(v) for k, v in fields.items()}, {_text(k): _text(v) for k, v in revoked.items()}
        )

    async def load_leader_state(self) -> LeaderState | None:
        version_map = await self.load_map()
        if version_map is None:
            return None
        with map_redis_errors():
            raw = await self._client.hgetall(self.keys.fingerprints)
        return decode_leader_state(version_map, {_text(k): _text(v) for k, v in raw.items()})

    async def write(
        self,
        token: str,
        expected_generation: int | None,
        state: LeaderState,
        delta: Delta,
        *,
        db_error: str | None = None,
    ) -> int:
        """Store ``state`` (the changed part of it) and publish ``delta`` or a beat.

        Returns :data:`WRITE_OK`, :data:`WRITE_NOT_LEADER` or :data:`WRITE_CONFLICT`.
        """
        version_map = state.map
        full = expected_generation is None or delta.schema_changed
        changed = version_map.dags if full else delta.changed
        fingerprints = state.fingerprints if full else {k: state.fingerprints[k] for k in delta.changed}
        payload = {
            "reset": full,
            "meta": meta_fields(version_map),
            "set": {k: encode_version(v) for k, v in changed.items()},
            "del": list(delta.removed),
            "fp": {**{k: encode_fingerprint(v) for k, v in fingerprints.items()}, "_global": state.global_fingerprint},
            "radd": {k: repr(v) for k, v in (version_map.revoked if full else delta.revoked_added).items()},
            "rdel": list(delta.revoked_removed),
        }
        message = encode_beat(version_map, db_error) if delta.empty else encode_delta(version_map, delta)
        expected = "" if expected_generation is None else str(expected_generation)
        with map_redis_errors():
            result = await self._write(
                keys=[self.keys.versions, self.keys.fingerprints, self.keys.revoked, self.keys.leader],
                args=[token, expected, _lua_json(payload), self.keys.channel, message],
            )
        return int(result)

    async def beat(self, version_map: VersionMap, db_error: str | None) -> None:
        """Tell the fleet the leader is alive though the DB poll failed (versions age)."""
        with map_redis_errors():
            await self._client.publish(self.keys.channel, encode_beat(version_map, db_error))

    async def bump(
        self, dag_ids: Iterable[str], now: float, *, listing: bool = False, definition: bool = False
    ) -> bool:
        """Raise the state (and with ``definition`` also the definition) versions of ``dag_ids``, and with
        ``listing`` the global version; False if there is no map or nothing to raise."""
        ids = list(dag_ids)
        flags = ("d" if definition else "") + ("1" if listing else "0")
        with map_redis_errors():
            result = await self._bump(keys=[self.keys.versions], args=[int(now * 1000), flags, self.keys.channel, *ids])
        return bool(result)

    async def purge(self) -> None:
        """Remove the map (``dagcache purge``; a leader rebuilds it at its next poll)."""
        with map_redis_errors():
            await self._client.delete(self.keys.versions, self.keys.fingerprints, self.keys.revoked)

    async def subscribe(self) -> AsyncIterator[bytes]:
        """Messages of the change channel until the connection fails (then :class:`CacheUnavailable`)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            with map_redis_errors():
                await cluster_ready(self._client)
                await pubsub.subscribe(self.keys.channel)
            while True:
                with map_redis_errors():
                    message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    yield b""
                    continue
                data = message.get("data")
                if isinstance(data, bytes | str):
                    yield data if isinstance(data, bytes) else data.encode()
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            except REDIS_ERRORS:
                pass


def _lua_json(payload: dict[str, object]) -> str:
    # cjson decodes both {} and [] as an empty table, so empty maps and lists need no special casing.
    return json.dumps(payload, separators=(",", ":"))


__all__ = ["DAG_PREFIX", "WRITE_CONFLICT", "WRITE_NOT_LEADER", "WRITE_OK", "RedisVersionStore", "map_redis_errors"]
