import ipaddress

import pytest

from gateway.admission import Admission, TokenBucket, split_host_port
from policy import Reason

NETS = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128")]


def admission(**kw):
    args = dict(max_concurrent_calls=2, max_calls_per_second=10.0)
    args.update(kw)
    return Admission(NETS, **args)


@pytest.mark.parametrize("host,trusted", [
    ("10.0.0.7", True), ("10.0.1.7", False), ("::1", True), ("::2", False), ("not-an-ip", False), ("", False),
])
def test_trusted_sources_are_cidr_matches(host, trusted):
    assert admission().is_trusted(host) is trusted


def test_rules_apply_in_order_untrusted_before_anything_else():
    a = admission()
    refusal = a.check(source_host="192.0.2.1", transport="udp", active_calls=99, now=0.0, draining=True)
    assert refusal.reason is Reason.UNTRUSTED_SOURCE and refusal.retry_after_s is None


def test_tls_required():
    a = admission(require_tls=True)
    assert a.check(source_host="10.0.0.1", transport="tcp", active_calls=0, now=0.0).reason is Reason.UNTRUSTED_SOURCE
    assert a.check(source_host="10.0.0.1", transport="tls", active_calls=0, now=0.0) is None


def test_draining_and_concurrency_answer_overloaded_with_retry_after():
    a = admission()
    draining = a.check(source_host="10.0.0.1", transport="udp", active_calls=0, now=0.0, draining=True)
    assert draining.reason is Reason.OVERLOADED and draining.retry_after_s >= 1
    full = a.check(source_host="10.0.0.1", transport="udp", active_calls=2, now=0.0)
    assert full.reason is Reason.OVERLOADED and "2 concurrent" in full.sentence


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert bucket.take(0.0) is None and bucket.take(0.0) is None
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.5)
    assert bucket.take(0.5) is None  # one token came back after half a second
    assert bucket.take(0.5) is not None


def test_rate_refusal_says_when_to_retry():
    a = admission(max_calls_per_second=1.0)
    assert a.check(source_host="10.0.0.1", transport="udp", active_calls=0, now=100.0) is None
    refusal = a.check(source_host="10.0.0.1", transport="udp", active_calls=0, now=100.0)
    assert refusal.reason is Reason.OVERLOADED and refusal.retry_after_s == 1


@pytest.mark.parametrize("address,expected", [
    ("127.0.0.1:5060", ("127.0.0.1", 5060)),
    ("[::1]:5062", ("::1", 5062)),
    ("10.1.2.3", ("10.1.2.3", None)),
    ("[::1]", ("::1", None)),
])
def test_split_host_port(address, expected):
    assert split_host_port(address) == expected
