"""Masking and redaction applied once, by the structlog processors that
`gateway.logs.configure_logging` installs: callers log raw values."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from gateway.logs import TEXT_FIELDS, NumberMasker, configure_logging, redact_passwords
from gateway.settings import SettingsError, parse_runtime_settings
from sip.privacy import mask_number, mask_numbers_in

REPO = Path(__file__).resolve().parents[2]

E164 = "+33142685300"
MASKED = "+33xxxxxxx00"
PJSIP_LINE = (
    "pjsua_call.c !Making call with acc #0 to sip:+33142685300@127.0.0.1:5070;user=phone\n"
    "To: <sip:+33142685300@127.0.0.1>"
)

# One event with a number in every field that can carry one.
RAW = {
    "dialled": "0033142685300",
    "destination": E164,
    "explanation": f"organiser alice@contoso.com; {E164} is in FR (fixed_line); up to 14400 s",
    "trace": [
        "organiser alice@contoso.com of tenant contoso",
        f"'{E164}' \u2192 {E164}, region FR",
        ["nested", f"tel:{E164}"],
        {"deeper": E164},
    ],
    "message": PJSIP_LINE,
    "target": f"<sip:{E164}@pstn.example;user=phone>",
    "detail": f"the trunk refused {E164}",
    "error": f"cannot reach {E164}",
    "reason_text": f"number {E164} is busy",  # not a default field: configured below
}
EXPECTED = {
    "dialled": "xxxxxxxxxxx00",
    "destination": MASKED,
    "explanation": f"organiser alice@contoso.com; {MASKED} is in FR (fixed_line); up to 14400 s",
    "trace": [
        "organiser alice@contoso.com of tenant contoso",
        f"'{MASKED}' \u2192 {MASKED}, region FR",
        ["nested", f"tel:{MASKED}"],
        {"deeper": MASKED},
    ],
    "message": PJSIP_LINE.replace(E164, MASKED),
    "target": f"<sip:{MASKED}@pstn.example;user=phone>",
    "detail": f"the trunk refused {MASKED}",
    "error": f"cannot reach {MASKED}",
    "reason_text": f"number {MASKED} is busy",
}
UNTOUCHED = {
    "call_id": "1-3300@10.0.0.1",
    "tenant": "contoso",
    "region": "FR",
    "status": 403,
    "setup_ms": 7.31,
    "talk_s": 14400.0,
    "source": "203.0.113.7",
    "reason": "not_domestic",
    "bucket": "tenant_pool",
}


def log_lines(fn, **config) -> list[dict]:
    out = io.StringIO()
    configure_logging("debug", "json", out, **config)
    fn(structlog.get_logger("test"))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def one_line(event: str = "call", **fields) -> tuple[dict, dict]:
    """The line written for `fields`, with masking on (extra field reason_text) and off."""
    (on,) = log_lines(lambda log: log.info(event, **fields), mask_numbers=True, mask_fields=["reason_text"])
    (off,) = log_lines(lambda log: log.info(event, **fields))
    return on, off


@pytest.mark.parametrize("field", sorted(RAW))
def test_every_field_that_can_carry_a_number_is_masked_when_on_and_untouched_when_off(field):
    on, off = one_line(**{field: RAW[field]}, **UNTOUCHED)
    assert on[field] == EXPECTED[field]
    assert off[field] == json.loads(json.dumps(RAW[field]))
    for key, value in UNTOUCHED.items():
        assert on[key] == off[key] == value


def test_a_whole_canonical_line_leaks_no_number():
    on, off = one_line(**RAW, **UNTOUCHED)
    assert "142685300" not in json.dumps(on) and "142685300" in json.dumps(off)


def test_default_text_fields_are_the_documented_ones():
    assert {"explanation", "trace", "message", "target", "detail"} <= TEXT_FIELDS


def test_extra_fields_are_masked_only_when_configured():
    (line,) = log_lines(lambda log: log.info("x", reason_text=RAW["reason_text"]), mask_numbers=True)
    assert line["reason_text"] == RAW["reason_text"]


@pytest.mark.parametrize("field", sorted(RAW))
def test_a_value_masked_by_its_caller_comes_out_the_same(field):
    # gateway/service.py, relay.py and sipstack.py still mask some fields themselves.
    by_caller = EXPECTED[field]
    on, _ = one_line(**{field: by_caller})
    assert on[field] == json.loads(json.dumps(by_caller))


def test_call_path_masking_then_processor_equals_processor_alone():
    by_hand = {
        "dialled": mask_number(RAW["dialled"]),
        "destination": mask_number(E164),
        "explanation": mask_numbers_in(RAW["explanation"]),
        "message": mask_numbers_in(PJSIP_LINE),
    }
    twice, _ = one_line(**by_hand)
    once, _ = one_line(**{k: RAW[k] for k in by_hand})
    assert twice == {**once, "timestamp": twice["timestamp"]}


def test_number_masker_processor_alone():
    masker = NumberMasker(extra_fields=("note",))
    event = masker(
        None, "info", {"event": "x", "destination": E164, "note": [E164], "other": E164, "dialled": None, "trace": []}
    )
    assert event == {"event": "x", "destination": MASKED, "note": [MASKED], "other": E164, "dialled": None, "trace": []}


# --- URL passwords -----------------------------------------------------------------------------

STORE_URL = "postgresql://gw:s3cret@db.example:5432/ledger"


@pytest.mark.parametrize("mask", [False, True])
def test_a_store_url_password_is_redacted_in_a_log_line(mask):
    def log(logger):
        logger.info(
            "gateway_started",
            store=STORE_URL,
            listen=["udp:127.0.0.1:5060"],
            urls={"alerts": "https://hook:t0ken@alerts.example/x"},
            retries=[STORE_URL],
        )

    (line,) = log_lines(log, mask_numbers=mask)
    assert line["store"] == "postgresql://gw:***@db.example:5432/ledger"
    assert line["urls"] == {"alerts": "https://hook:***@alerts.example/x"}
    assert line["retries"] == ["postgresql://gw:***@db.example:5432/ledger"]
    assert line["listen"] == ["udp:127.0.0.1:5060"]
    assert "s3cret" not in json.dumps(line) and "t0ken" not in json.dumps(line)


def test_passwords_in_an_exception_are_redacted_and_frames_carry_no_locals():
    def log(logger):
        password_in_a_local = STORE_URL  # noqa: F841
        try:
            raise ConnectionError(f"cannot connect to {STORE_URL} for {E164}")
        except ConnectionError:
            logger.exception("ledger_unreachable")

    (line,) = log_lines(log, mask_numbers=True)
    text = json.dumps(line)
    assert "s3cret" not in text and "142685300" not in text
    (exc,) = line["exception"]
    assert exc["exc_value"] == f"cannot connect to postgresql://gw:***@db.example:5432/ledger for {MASKED}"
    assert exc["frames"] and all("locals" not in frame for frame in exc["frames"])


def test_redaction_processor_leaves_values_without_urls_alone():
    event = {"event": "x", "n": 3, "t": ("a", "b"), "d": {"k": 1}, "s": "user:pw@host"}
    assert redact_passwords(None, "info", dict(event)) == event


# --- configuration and the CLI --------------------------------------------------------------------

GOOD = {
    "gateway": {
        "listen": [{"transport": "udp", "address": "127.0.0.1", "port": 5060}],
        "trusted_sources": ["10.0.0.0/24"],
    },
    "trunk": {"uri": "sip:trunk.example.net:5060", "caller_id": "sip:+18005550100@gw.example.net"},
}


def test_mask_fields_setting():
    assert parse_runtime_settings(GOOD).logging.mask_fields == ()
    s = parse_runtime_settings({**GOOD, "logging": {"mask_numbers": True, "mask_fields": ["reason_text"]}})
    assert s.logging.mask_numbers and s.logging.mask_fields == ("reason_text",)
    for bad in ("reason_text", [""], [3]):
        with pytest.raises(SettingsError, match="logging.mask_fields"):
            parse_runtime_settings({**GOOD, "logging": {"mask_fields": bad}})


def test_cli_error_quoting_a_store_url_hides_its_password(tmp_path):
    text = (REPO / "examples" / "gateway.toml").read_text()
    assert 'url = "sqlite:///var/ledger.db"' in text
    config = tmp_path / "gw.toml"
    config.write_text(text.replace('url = "sqlite:///var/ledger.db"', 'url = "mysql://root:hunter2@db/ledger"'))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "db", "version", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2 and "store.url" in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stderr and "mysql://root:***@db/ledger" in proc.stderr
