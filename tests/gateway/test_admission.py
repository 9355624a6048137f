"""Admission control in the service (draining, concurrency, rate). The trusted-
source and TLS checks live in the SIP engine: tests/integration/test_edge.py."""

import pytest

from gateway.admission import Admission, TokenBucket
from policy import Reason


def admission(**kw):
    args = dict(max_concurrent_calls=2, max_calls_per_second=10.0)
    args.update(kw)
    return Admission(**args)


def test_draining_comes_first_and_answers_overloaded_with_retry_after():
    refusal = admission().check(active_calls=99, now=0.0, draining=True)
    assert refusal.reason is Reason.OVERLOADED and refusal.retry_after_s >= 1 and "shutting down" in refusal.sentence


def test_concurrency_ceiling():
    a = admission()
    assert a.check(active_calls=1, now=0.0) is None
    full = a.check(active_calls=2, now=0.0)
    assert full.reason is Reason.OVERLOADED and "2 concurrent" in full.sentence and full.retry_after_s == 1


def test_token_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert bucket.take(0.0) is None and bucket.take(0.0) is None
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.5)
    assert bucket.take(0.5) is None  # one token came back after half a second
    assert bucket.take(0.5) is not None


def test_rate_refusal_says_when_to_retry():
    a = admission(max_calls_per_second=1.0)
    assert a.check(active_calls=0, now=100.0) is None
    refusal = a.check(active_calls=0, now=100.0)
    assert refusal.reason is Reason.OVERLOADED and refusal.retry_after_s == 1
