from __future__ import annotations

from proxy.limits import Limits, check_request

LIMITS = Limits(max_url_length=100, max_header_size=200, max_header_count=5, max_body_size=1000)


def test_within_limits():
    assert check_request(LIMITS, raw_path="/x", headers=[("Host", "h")], content_length=1000) is None


def test_each_limit_maps_to_its_status():
    long_url = check_request(LIMITS, raw_path="/" + "a" * 100, headers=[], content_length=None)
    many = check_request(LIMITS, raw_path="/", headers=[("X", "y")] * 6, content_length=None)
    big_headers = check_request(LIMITS, raw_path="/", headers=[("X-A", "v" * 300)], content_length=None)
    body = check_request(LIMITS, raw_path="/", headers=[], content_length=1001)
    assert [r.status if r else None for r in (long_url, many, big_headers, body)] == [414, 431, 431, 413]


def test_zero_body_limit_means_unlimited():
    unlimited = Limits(max_url_length=100, max_header_size=200, max_header_count=5, max_body_size=0)
    assert check_request(unlimited, raw_path="/", headers=[], content_length=10**12) is None
