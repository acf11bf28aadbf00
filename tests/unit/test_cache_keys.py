"""cache.keys: the rendering is exact, printable, injective, and keeps one DAG in one Redis Cluster slot."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from redis.crc import key_slot  # pure function (CRC16), no socket

from cache import CacheKey

NASTY = ["", "a", "a:b", "a}b", "{a}", "a,b", "a=1", "a b", "a%3Ab", "%", "é", "🙂", "a\nb", ":", "}", "{", "~", "-"]


def make_key(**overrides: object) -> CacheKey:
    parts: dict[str, object] = {
        "namespace": "dagcache",
        "route": "tasks",
        "dag": "example_dag",
        "versions": (("def", 3), ("state", 17)),
        "scope": "5f2a",
        "digest": "9c1e",
    }
    parts.update(overrides)
    return CacheKey(**parts)  # type: ignore[arg-type]


def hash_tag(rendered: str) -> str:
    start = rendered.index("{")
    return rendered[start + 1 : rendered.index("}", start)]


def test_render_layout():
    assert make_key().render() == "dagcache:e1:tasks:{dagcache:example_dag}:def=3,state=17:5f2a:9c1e"
    assert make_key(dag="", versions=()).render() == "dagcache:e1:tasks:{dagcache:}::5f2a:9c1e"


def test_versions_are_canonical():
    assert make_key(versions=(("state", 17), ("def", 3))) == make_key()
    assert make_key(versions=(("state", 17), ("def", 3))).render() == make_key().render()
    with pytest.raises(ValueError):
        make_key(versions=(("def", 1), ("def", 2)))
    with pytest.raises(TypeError):
        make_key(versions=(("def", True),))
    with pytest.raises(TypeError):
        make_key(versions=(("def", "3"),))


@pytest.mark.parametrize("text", NASTY)
def test_any_part_renders_as_printable_ascii_without_spaces(text):
    for field in ("namespace", "route", "dag", "scope", "digest"):
        rendered = make_key(**{field: text}, versions=((text, -1),)).render()
        assert re.fullmatch(r"[\x21-\x7e]+", rendered), rendered


def test_naive_concatenation_collisions_do_not_collide():
    pairs = [
        (make_key(dag="a:b", route="c"), make_key(dag="b", route="c:a")),
        (make_key(dag="a", scope="b:c"), make_key(dag="a:b", scope="c")),
        (make_key(scope="x:y", digest="z"), make_key(scope="x", digest="y:z")),
        (make_key(versions=(("a", 1), ("b", 2))), make_key(versions=(("a=1,b", 2),))),
        (make_key(dag="x}y"), make_key(dag="x", route="y")),
        (make_key(dag="a%3Ab"), make_key(dag="a:b")),
    ]
    for one, other in pairs:
        assert one.render() != other.render()


def test_rendering_is_injective_over_nasty_parts():
    rng = random.Random(20240601)
    seen: dict[str, CacheKey] = {}
    fields = ("namespace", "route", "dag", "scope", "digest")
    for _ in range(20_000):
        parts = {f: "".join(rng.choices(NASTY, k=rng.randint(0, 3))) for f in fields}
        names = {"".join(rng.choices(NASTY, k=rng.randint(1, 2))) for _ in range(rng.randint(0, 2))}
        key = CacheKey(versions=tuple((n, rng.randint(-2, 2)) for n in names), **parts)
        rendered = key.render()
        assert seen.setdefault(rendered, key) == key, f"{key} and {seen[rendered]} both render {rendered}"
    assert len(seen) > 10_000


def test_every_part_changes_the_key_and_the_etag():
    base = make_key()
    variants = [
        make_key(namespace="other"),
        make_key(route="details"),
        make_key(dag="other_dag"),
        make_key(versions=(("def", 4), ("state", 17))),
        make_key(versions=(("def", 3),)),
        make_key(scope="5f2b"),
        make_key(digest="9c1f"),
    ]
    for a, b in itertools.combinations([base, *variants], 2):
        assert a.render() != b.render()
        assert a.etag() != b.etag()


def test_etag_is_strong_stable_and_derived_from_the_key():
    etag = make_key().etag()
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert make_key().etag() == etag


@pytest.mark.parametrize("dag", ["example_dag", "a:b", "x}y{z", "é"])
def test_one_dag_one_cluster_slot(dag):
    keys = [
        make_key(dag=dag),
        make_key(dag=dag, route="details", versions=(("def", 9),)),
        make_key(dag=dag, scope="other", digest="other"),
    ]
    rendered = [k.render() for k in keys]
    assert {hash_tag(r) for r in rendered} == {hash_tag(rendered[0])}
    slots = {key_slot(r.encode()) for r in rendered} | {key_slot(f"{r}:lock".encode()) for r in rendered}
    assert len(slots) == 1
    assert hash_tag(make_key(dag=dag, namespace="n2").render()) != hash_tag(rendered[0])
