"""`ops.logs`: the pure part of `dialout-gw logs` (no SIP, no pjsua2)."""

from __future__ import annotations

import ast
import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from ops import logs as la
from ops.logs import reading

REPO = Path(__file__).resolve().parents[2]


def call(
    call_id,
    *,
    tenant="contoso",
    organizer="alice@contoso.com",
    region="FR",
    decision="allow",
    reason="allowed",
    setup_ms=10.0,
    bridge_status=200,
    billed_units=1,
    talk_s=60.0,
    ts="2026-11-22T10:00:00.000000Z",
    trace=None,
    **extra,
):
    """A canonical line in the gateway's key order (GatewayService._canonical_line)."""
    fields = {
        "component": "gateway",
        "call_id": call_id,
        "tenant": tenant,
        "organizer": organizer,
        "meeting": "meeting-1",
        "initiator": "i@example.com",
        "location": "FR",
        "dialled": "+33142685300",
        "destination": "+33142685300",
        "region": region,
        "number_type": "fixed_line",
        "decision": decision,
        "reason": reason,
        "bucket": "tenant_pool" if decision == "allow" else None,
        "fallback_buckets": [],
        "max_duration_s": 14400 if decision == "allow" else None,
        "bridge_status": bridge_status,
        "trunk_status": bridge_status if decision == "allow" else None,
        "setup_ms": setup_ms,
        "talk_s": talk_s if decision == "allow" else 0.0,
        "billed_units": billed_units if decision == "allow" else 0,
        "charges": {},
        "ended_by": "bridge",
        "explanation": f"because {reason}",
    }
    fields.update(extra)
    if decision == "deny":
        fields["trace"] = trace or ["organiser alice@contoso.com of tenant contoso", f"{reason}: no"]
    fields.update(event="call", level="info", timestamp=ts)
    return json.dumps(fields)


def deny(call_id, reason, status=403, **kw):
    return call(call_id, decision="deny", reason=reason, bridge_status=status, **kw)


def refusal(reason="untrusted_source", suppressed=0, ts="2026-11-22T10:00:00.000000Z"):
    return json.dumps(
        {
            "component": "gateway",
            "source": "127.0.0.2",
            "reason": reason,
            "status": 403,
            "explanation": "the source is not trusted",
            "suppressed_since_last": suppressed,
            "transport": "udp",
            "event": "admission_refused",
            "level": "warning",
            "timestamp": ts,
        }
    )


def event(name, call_id, ts="2026-11-22T10:00:01.000000Z", **fields):
    return json.dumps(
        {"component": "gateway", "call_id": call_id, **fields, "event": name, "level": "info", "timestamp": ts}
    )


def pjsip(message, ts="2026-11-22T10:00:00.500000Z"):
    return json.dumps(
        {"component": "pjsip", "message": message, "pj_level": 1, "event": "pjsip", "level": "error", "timestamp": ts}
    )


LOG = [
    json.dumps(
        {"component": "main", "event": "gateway_started", "level": "info", "timestamp": "2026-11-22T09:59:59.000000Z"}
    ),
    call("c1", setup_ms=100.0, ts="2026-11-22T10:00:00.000000Z"),
    call(
        "c2",
        setup_ms=200.0,
        organizer="bob@contoso.com",
        billed_units=3,
        talk_s=150.0,
        ts="2026-11-22T10:05:00.000000Z",
    ),
    deny("c3", "not_domestic", setup_ms=2.0, region="DE", ts="2026-11-22T10:10:00.000000Z"),
    deny(
        "c4",
        "no_entitlement",
        tenant="fabrikam",
        organizer="frank@fabrikam.com",
        region="GB",
        setup_ms=4.0,
        ts="2026-11-22T11:00:00.000000Z",
    ),
    deny(
        "c5",
        "no_entitlement",
        tenant="fabrikam",
        organizer="frank@fabrikam.com",
        region="GB",
        setup_ms=6.0,
        ts="2026-11-22T12:00:00.000000Z",
    ),
    call(
        "c6",
        reason="trunk_failure",
        bridge_status=486,
        billed_units=0,
        talk_s=0.0,
        setup_ms=300.0,
        ts="2026-11-22T12:30:00.000000Z",
    ),
    event(
        "call_cut",
        "c2",
        reason="duration_exhausted",
        detail="the authorised duration is used up",
        ts="2026-11-22T10:05:30.000000Z",
    ),
    refusal("untrusted_source", 0),
    refusal("untrusted_source", 4, ts="2026-11-22T10:01:00.000000Z"),
    refusal("overloaded", 0, ts="2026-11-22T12:00:00.000000Z"),
    pjsip("pjsua_call.c Call c3 ended"),
    "Traceback (most recent call last):",
    "",
    '{"event": "call", "call_id": "broken", "tenant": "cont',  # truncated by a crash
    '["call"]',  # JSON, but not an object
]


def lines(text_lines):
    return [line.encode() for line in text_lines]


def summary(log=LOG, **filters):
    return la.summarize([lines(log)], la.Filters.from_strings(**filters)).to_dict(top=0)


def write(path: Path, log=LOG, compress=False):
    data = ("\n".join(log) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --- summary ---------------------------------------------------------------------------------


def test_summary_counts_calls_reasons_and_groups():
    d = summary()
    assert d["calls"] == {
        "total": 6,
        "relayed": 3,
        "rejected": 3,
        "answered": 2,
        "relay_ratio": 0.5,
        "reject_ratio": 0.5,
    }
    assert [(r["reason"], r["calls"]) for r in d["reasons"]] == [
        ("allowed", 2),
        ("no_entitlement", 2),
        ("not_domestic", 1),
        ("trunk_failure", 1),
    ]
    tenants = {r["tenant"]: r for r in d["tenants"]}
    assert tenants["contoso"] == {
        "tenant": "contoso",
        "calls": 4,
        "relayed": 3,
        "rejected": 1,
        "billed_units": 4,
        "talk_s": 210.0,
    }
    assert tenants["fabrikam"]["rejected"] == 2
    assert d["tenants"][0]["tenant"] == "contoso"  # ranked by calls
    assert d["organizers"][0] == {
        "organizer": "alice@contoso.com",
        "calls": 3,
        "relayed": 2,
        "rejected": 1,
        "billed_units": 1,
        "talk_s": 60.0,
    }
    assert {r["region"]: r["calls"] for r in d["regions"]} == {"FR": 3, "GB": 2, "DE": 1}
    assert d["period"] == {"first": "2026-11-22T10:00:00.000000Z", "last": "2026-11-22T12:30:00.000000Z"}


def test_summary_counts_admission_refusals_with_the_suppressed_ones():
    adm = summary()["admission_refusals"]
    assert adm == {"lines": 3, "total": 7, "by_reason": {"untrusted_source": 6, "overloaded": 1}}


def test_summary_counts_lines_non_json_and_malformed():
    d = summary()
    # 16 entries, one blank: 15 lines; a traceback line is not JSON; a truncated call line is malformed.
    assert d["lines"] == {"total": 15, "non_json": 1, "malformed": 1, "filtered_out": 0}


def test_setup_percentiles_overall_and_per_decision():
    s = summary()["setup_ms"]
    assert s["relayed"] == {"count": 3, "p50": 200.0, "p99": 298.0, "max": 300.0}
    assert s["rejected"] == {"count": 3, "p50": 4.0, "p99": 5.96, "max": 6.0}
    assert s["all"]["count"] == 6 and s["all"]["p50"] == 53.0 and s["all"]["max"] == 300.0


@pytest.mark.parametrize(
    "values,q,expected",
    [
        ([], 50, None),
        ([7], 99, 7.0),
        ([1, 2], 50, 1.5),
        ([1, 2, 3, 4], 50, 2.5),
        (list(range(1, 101)), 99, 99.01),
        (list(range(1, 101)), 50, 50.5),
        ([5, 5, 5], 99, 5.0),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values, q, expected):
    got = la.percentile(sorted(values), q)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_calls_without_setup_time_are_counted_but_not_in_percentiles():
    d = summary([call("a", setup_ms=None), call("b", setup_ms=5.0)])
    assert d["calls"]["total"] == 2 and d["setup_ms"]["all"]["count"] == 1


def test_empty_log():
    d = summary([])
    assert d["calls"]["total"] == 0 and d["calls"]["relay_ratio"] is None
    assert d["setup_ms"]["all"] == {"count": 0, "p50": None, "p99": None, "max": None}
    assert la.format_summary(d, "empty.log").startswith("empty.log: 0 lines")


# --- filters -----------------------------------------------------------------------------------


def test_tenant_filter_keeps_that_tenant_and_drops_admission_refusals():
    d = summary(tenant="fabrikam")
    assert d["calls"]["total"] == 2 and {r["tenant"] for r in d["tenants"]} == {"fabrikam"}
    assert d["admission_refusals"]["total"] == 0
    assert d["filters"]["tenant"] == "fabrikam"


def test_tenant_filter_does_not_match_a_tenant_named_in_another_field():
    log = [call("x", tenant="contoso", organizer="fabrikam@contoso.com", explanation='"fabrikam"')]
    assert summary(log, tenant="fabrikam")["calls"]["total"] == 0


def test_reason_filter_applies_to_calls_and_refusals():
    d = summary(reason="no_entitlement")
    assert d["calls"]["total"] == 2 and d["admission_refusals"]["total"] == 0
    d = summary(reason="untrusted_source")
    assert d["calls"]["total"] == 0 and d["admission_refusals"]["total"] == 6


def test_since_is_inclusive_and_until_exclusive():
    d = summary(since="2026-11-22T10:05:00Z", until="2026-11-22T12:00:00Z")
    assert d["calls"]["total"] == 3  # c2 (at since), c3, c4; c5 at `until` is out
    assert d["admission_refusals"]["lines"] == 0


def test_since_without_offset_is_utc_and_with_offset_is_converted():
    assert summary(since="2026-11-22T12:00")["calls"]["total"] == 2
    assert summary(since="2026-11-22T13:00+01:00")["calls"]["total"] == 2
    assert summary(since="2026-11-23")["calls"]["total"] == 0


def test_time_filter_reads_timestamps_in_other_iso_layouts():
    log = [
        call("a", ts="2026-11-22T10:00:00+00:00"),
        call("b", ts="2026-11-22T11:00:00Z"),
        call("c", ts=None),
        call("d", ts="not a time"),
    ]
    assert summary(log, since="2026-11-22T10:30:00Z")["calls"]["total"] == 1


def test_filters_combine():
    d = summary(tenant="contoso", reason="allowed", until="2026-11-22T10:01:00Z")
    assert d["calls"]["total"] == 1


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"since": "yesterday"}, "--since"),
        ({"until": "2026-13-01"}, "--until"),
        ({"since": "2026-11-22T12:00Z", "until": "2026-11-22T11:00Z"}, "later than"),
    ],
)
def test_bad_filters_are_input_errors(kw, message):
    with pytest.raises(la.LogInputError, match=message):
        la.Filters.from_strings(**kw)


# --- reading ----------------------------------------------------------------------------------


def test_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    plain = summary()
    packed = write(tmp_path / "gateway.log.1", compress=True)  # no .gz suffix
    assert la.summarize_path(str(packed)).to_dict(top=0) == plain
    fake = write(tmp_path / "plain.gz")  # .gz name, plain text
    assert la.summarize_path(str(fake)).to_dict(top=0) == plain


def test_stdin_plain_and_gzip(tmp_path):
    data = ("\n".join(LOG) + "\n").encode()
    for blob in (data, gzip.compress(data)):
        got = la.summarize_path("-", stdin=io.BytesIO(blob)).to_dict(top=0)
        assert got == summary()


def test_missing_file_directory_and_broken_gzip_are_input_errors(tmp_path):
    with pytest.raises(la.LogInputError, match="no such file"):
        la.summarize_path(str(tmp_path / "nope.log"))
    with pytest.raises(la.LogInputError, match="directory"):
        la.summarize_path(str(tmp_path))
    data = gzip.compress(("\n".join(LOG * 50)).encode())
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(la.LogInputError, match="truncated"):
        la.summarize_path(str(tmp_path / "cut.gz"))
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(la.LogInputError):
        la.summarize_path(str(tmp_path / "bad.gz"))


def test_last_line_without_newline_crlf_and_tiny_blocks(tmp_path):
    path = tmp_path / "g.log"
    path.write_bytes(("\r\n".join(LOG)).encode())  # CRLF, no final newline
    with la.open_log(str(path)) as stream:
        got = la.summarize(la.line_batches(stream, chunk=7)).to_dict(top=0)
    assert got == summary()


@pytest.mark.parametrize("compress", [False, True])
def test_worker_processes_give_the_same_summary(tmp_path, monkeypatch, compress):
    big = LOG * 400
    path = write(tmp_path / "big.log", big, compress)
    monkeypatch.setattr(reading, "CHUNK_BYTES", 4096)  # many blocks (gzip) or byte ranges (plain)
    one = la.summarize_path(str(path), jobs=1).to_dict(top=0)
    two = la.summarize_path(str(path), jobs=2).to_dict(top=0)
    three = la.summarize_path(str(path), jobs=3).to_dict(top=0)
    assert one["calls"]["total"] == 2400 and one["lines"]["total"] == 15 * 400
    assert two == one and three == one
    assert one == summary(big)


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_byte_ranges_read_every_line_once(tmp_path, ending):
    text = "\n".join(f"line {i} " + "x" * (i % 37) for i in range(500)) + ending
    path = tmp_path / "r.log"
    path.write_bytes(text.encode())
    size = path.stat().st_size
    want = la.split_lines(text.encode())
    for parts in (1, 2, 3, 7, 64, size):
        ranges = reading.byte_ranges(size, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        for chunk in (5, 64, 1 << 20):
            got = [
                line
                for a, b in ranges
                for block in reading.iter_range_blocks(str(path), a, b, chunk)
                for line in la.split_lines(block)
            ]
            assert got == want, (parts, chunk)


def test_plain_file_size_is_for_plain_regular_files_only(tmp_path):
    assert reading.plain_file_size(str(write(tmp_path / "p.log"))) == (tmp_path / "p.log").stat().st_size
    assert reading.plain_file_size(str(write(tmp_path / "g.log", compress=True))) is None
    with pytest.raises(la.LogInputError, match="no such file"):
        reading.plain_file_size(str(tmp_path / "nope.log"))


def test_event_is_checked_after_parsing_not_guessed_from_the_marks():
    # A refusal that mentions "call" is still a refusal; a line with "call" as a key is not a call.
    odd_refusal = json.dumps(
        {
            "reason": "overloaded",
            "note": "call",
            "event": "admission_refused",
            "timestamp": "2026-11-22T10:00:00.000000Z",
        }
    )
    not_a_call = json.dumps({"call": 1, "event": "call_cut", "timestamp": "2026-11-22T10:00:00.000000Z"})
    d = summary([odd_refusal, not_a_call, call("a")])
    assert d["admission_refusals"]["total"] == 1 and d["calls"]["total"] == 1


def test_fast_path_parses_real_lines_like_json_loads():
    tricky = call('q"uote\\d\u00e9', organizer="z\u00fcrich@contoso.com", explanation='a, "b": c \u2192 d')
    d = summary([tricky, "  " + call("padded"), call("trailing") + "   ", call("junk") + " x"])
    assert d["calls"]["total"] == 3 and d["lines"]["malformed"] == 1
    assert {r["organizer"] for r in d["organizers"]} == {"z\u00fcrich@contoso.com", "alice@contoso.com"}


# --- one call ---------------------------------------------------------------------------------


def test_call_lookup_returns_canonical_line_trace_and_other_events():
    r = la.find_call([lines(LOG)], "c3")
    assert r.found and [e["event"] for e in r.events] == ["call", "pjsip"]
    (line,) = r.canonical
    assert line["reason"] == "not_domestic" and line["trace"][-1] == "not_domestic: no"
    text = la.format_call(r)
    assert "deny  not_domestic" in text and "trace" in text and "not_domestic: no" in text
    assert "Call c3 ended" in text
    r = la.find_call([lines(LOG)], "c2")
    assert [e["event"] for e in r.events] == ["call", "call_cut"]
    assert "call_cut" in la.format_call(r) and "detail=the authorised duration is used up" in la.format_call(r)


def test_call_lookup_does_not_confuse_ids_that_contain_each_other():
    log = [call("1-1@h"), call("11-1@h"), call("1-1@host")]
    r = la.find_call([lines(log)], "1-1@h")
    assert [e["call_id"] for e in r.events] == ["1-1@h"]


def test_call_lookup_unknown_id_and_filters(tmp_path):
    assert not la.find_call([lines(LOG)], "nope").found
    assert not la.find_call([lines(LOG)], "c3", la.Filters(tenant="fabrikam")).found
    assert la.find_call([lines(LOG)], "c3", la.Filters(reason="not_domestic")).found
    r = la.find_call([lines(LOG)], "c2", la.Filters.from_strings(until="2026-11-22T10:05:10Z"))
    assert [e["event"] for e in r.events] == ["call"]
    with pytest.raises(la.LogInputError):
        la.find_call([lines(LOG)], "")


def test_call_lookup_on_files_matches_the_line_by_line_one(tmp_path):
    special = 'weird"id\\\u00e9'
    log = LOG + [deny(special, "number_invalid", 484)]
    for compress in (False, True):
        path = write(tmp_path / f"g{compress}.log", log, compress)
        for cid in ("c2", "c3", special, "missing"):
            by_file = la.find_call_path(str(path), cid)
            by_lines = la.find_call([lines(log)], cid)
            assert by_file.events == by_lines.events
            assert by_file.lines == by_lines.lines == len(log)
    assert la.find_call_path(str(path), special).canonical[0]["reason"] == "number_invalid"


def test_call_report_json_form():
    d = la.find_call([lines(LOG)], "c4").to_dict()
    assert d["found"] and d["calls"] == 1 and d["call"]["reason"] == "no_entitlement"
    assert d["call"]["trace"] and d["events"][0] is d["call"]


# --- layering ---------------------------------------------------------------------------------


def test_log_reader_is_stdlib_only():
    # tests/test_layering.py keeps gateway and pjsua2 out of ops/; the log reader goes further:
    # no third-party module at all, so it runs wherever Python and the log file are.
    imported = set()
    for path in sorted((REPO / "ops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported - {"ops"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_log_reader_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (REPO / "ops" / "logs").glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
