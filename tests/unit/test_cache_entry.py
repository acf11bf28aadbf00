"""cache.entry: the stored format round-trips, anything else is CorruptEntry, compression is deterministic."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import subprocess
import sys

import pytest

from cache import CachedResponse, CorruptEntry, compress_variants, decode, encode, size
from cache.entry import BROTLI_AVAILABLE, FORMAT_TAG, gzip_deterministic
from tests.conftest import REPO

BODY = json.dumps({"tasks": [{"task_id": f"t{i}", "downstream": [f"t{i + 1}"]} for i in range(500)]}).encode()


def make_entry(body: bytes = BODY, key: str = "ns:e1:tasks:{ns:a}:d=1:s:q", **overrides: object) -> CachedResponse:
    entry = CachedResponse.create(
        status=200,
        headers=(("content-type", "application/json"), ("x-note", "é \n ünïcode")),
        body=body,
        key=key,
        etag='"0123456789abcdef0123456789abcdef"',
        stored_at=1_800_000_000.125,
    )
    return dataclasses.replace(entry, **overrides)  # type: ignore[arg-type]


def header_of(raw: bytes) -> dict[str, object]:
    end = raw.index(b"\n", len(FORMAT_TAG))
    header: dict[str, object] = json.loads(raw[len(FORMAT_TAG) : end])
    return header


def with_header(raw: bytes, **changes: object) -> bytes:
    end = raw.index(b"\n", len(FORMAT_TAG))
    header = {**header_of(raw), **changes}
    return FORMAT_TAG + json.dumps(header).encode() + raw[end:]


def test_round_trip_keeps_every_field():
    entry = make_entry()
    assert entry.gzip is not None and gzip.decompress(entry.gzip) == BODY
    assert decode(encode(entry)) == entry
    assert decode(encode(entry), key=entry.key) == entry


@pytest.mark.parametrize(
    "overrides",
    [
        {"body": b"", "gzip": None, "br": None},
        {"gzip": None, "br": b"\x00brotli-ish\n"},
        {"gzip": b"", "br": b""},
        {"status": 404, "headers": ()},
        {"stored_at": 0.0},
    ],
)
def test_round_trip_of_edge_cases(overrides):
    entry = make_entry(**overrides)
    assert decode(encode(entry)) == entry


def test_format_is_tag_json_header_and_raw_parts():
    entry = make_entry(br=b"BR")
    raw = encode(entry)
    assert raw.startswith(b"dcache1\n{")
    assert header_of(raw)["parts"] == [len(BODY), len(entry.gzip or b""), 2]
    assert raw.endswith(BODY + (entry.gzip or b"") + b"BR")
    assert encode(entry) == raw  # deterministic


def test_encode_refuses_a_non_finite_time():
    with pytest.raises(ValueError):
        encode(make_entry(stored_at=float("nan")))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"dcache0\n{}\n",
        b"DCACHE1\n{}\n",
        pickle.dumps({"status": 200}),
        b"dcache1\n",
        b"dcache1\n{not json}\nbody",
        b"dcache1\n\xff\xfe\nbody",
        b"dcache1\n[1, 2, 3]\n",
    ],
)
def test_unknown_or_garbled_bytes_are_corrupt(raw):
    with pytest.raises(CorruptEntry):
        decode(raw)


def test_truncated_or_extra_data_is_corrupt():
    raw = encode(make_entry())
    for broken in (raw[:-1], raw + b"x", raw[: len(raw) // 2], raw[: raw.index(b"\n", len(FORMAT_TAG))]):
        with pytest.raises(CorruptEntry):
            decode(broken)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "200"},
        {"status": True},
        {"status": 99},
        {"headers": [["content-type"]]},
        {"headers": [["a", 1]]},
        {"headers": {"a": "b"}},
        {"etag": None},
        {"key": 1},
        {"stored_at": "now"},
        {"stored_at": None},
        {"parts": [1, 2]},
        {"parts": [-1, None, None]},
        {"parts": [1.5, None, None]},
        {"extra": 1},
    ],
)
def test_bad_header_fields_are_corrupt(changes):
    raw = with_header(encode(make_entry()), **changes)
    with pytest.raises(CorruptEntry):
        decode(raw)


def test_a_missing_field_is_corrupt():
    raw = encode(make_entry())
    header = header_of(raw)
    del header["etag"]
    end = raw.index(b"\n", len(FORMAT_TAG))
    with pytest.raises(CorruptEntry):
        decode(FORMAT_TAG + json.dumps(header).encode() + raw[end:])


def test_an_entry_read_under_another_key_is_corrupt():
    raw = encode(make_entry(key="ns:e1:a"))
    with pytest.raises(CorruptEntry, match="stored under"):
        decode(raw, key="ns:e1:b")


def test_gzip_is_deterministic_and_standard():
    gz = gzip_deterministic(BODY)
    assert gzip.decompress(gz) == BODY
    assert gz[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # mtime 0, OS unknown
    assert gzip_deterministic(BODY) == gz
    assert compress_variants(BODY)[0] == gz


def test_gzip_bytes_are_identical_in_another_process():
    code = (
        "import sys; from cache.entry import gzip_deterministic; "
        "sys.stdout.buffer.write(gzip_deterministic(sys.stdin.buffer.read()))"
    )
    other = subprocess.run([sys.executable, "-c", code], input=BODY, capture_output=True, cwd=REPO, check=True)
    assert other.stdout == gzip_deterministic(BODY)


def test_compression_level_is_configurable():
    fast, best = gzip_deterministic(BODY, level=1), gzip_deterministic(BODY, level=9)
    assert fast != best
    assert fast[8] == 4 and best[8] == 2  # the XFL byte, as the gzip module writes it
    assert gzip.decompress(fast) == gzip.decompress(best) == BODY
    assert compress_variants(BODY, level=1)[0] == fast


def test_br_variant_exactly_when_brotli_is_installed():
    br = compress_variants(BODY)[1]
    if BROTLI_AVAILABLE:  # the test extras install it; a plain install may not have it
        import brotli

        assert br is not None and brotli.decompress(br) == BODY
    else:
        assert br is None and make_entry().br is None


def test_create_leaves_out_variants_that_do_not_help():
    small = CachedResponse.create(status=200, headers=(), body=b"{}", key="k", etag='"e"', stored_at=0.0)
    assert small.gzip is None and small.br is None
    noise = os.urandom(4096)
    random = CachedResponse.create(status=200, headers=(), body=noise, key="k", etag='"e"', stored_at=0.0)
    assert random.gzip is None and random.body == noise


def test_size_counts_every_stored_part():
    entry = make_entry(br=None)
    assert size(entry) > len(entry.body) + len(entry.gzip or b"")
    assert size(make_entry(br=b"x" * 1000)) == size(entry) + 1000
    assert size(make_entry(body=BODY * 2, gzip=entry.gzip, br=None)) == size(entry) + len(BODY)
