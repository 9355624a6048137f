"""`dialout-gw explain` from flags and from JSONL, its error handling, and its readable form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commands.verdict import ASCII_MARKS, format_duration, render_decision
from tests.terminal import run_on_a_terminal

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "gateway.toml")
KEYS = {
    "allow",
    "status",
    "reason",
    "bucket",
    "fallback_buckets",
    "e164",
    "region",
    "number_type",
    "max_duration_s",
    "explanation",
    "trace",
}


def _explain(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["explain", "--config", EXAMPLE, *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_single_request_from_flags(capsys):
    code, out, err = _explain(
        capsys,
        "--organizer",
        "alice@contoso.com",
        "--number",
        "+33 1 42 68 53 00",
        "--at",
        "2018-05-01T10:00:00+02:00",
        "--initiator",
        "guest@example.org",
    )
    assert code == 0 and err == ""
    (d,) = out
    assert set(d) >= KEYS
    assert d["allow"] is True and d["reason"] == "allowed" and d["bucket"] == "promotion"
    assert d["e164"] == "+33142685300" and d["region"] == "FR" and d["status"] == 200


@pytest.mark.parametrize(
    ("at", "bucket"), [("2018-06-30T23:59:59", "promotion"), ("2018-07-01T00:00:00", "tenant_pool")]
)
def test_naive_at_is_tenant_local_time(capsys, at, bucket):
    code, (d,), _ = _explain(capsys, "--organizer", "alice@contoso.com", "--number", "+33142685300", "--at", at)
    assert code == 0 and d["bucket"] == bucket


def test_counters_flag(capsys):
    code, (d,), _ = _explain(
        capsys,
        "--organizer",
        "alice@contoso.com",
        "--number",
        "0142685300",
        "--at",
        "2020-01-10T12:00",
        "--counters",
        '{"pool_used_minutes": 1497, "credits_balance": 0}',
    )
    assert code == 0 and d["bucket"] == "tenant_pool" and d["max_duration_s"] == 180


def test_many_requests_from_jsonl(capsys, tmp_path):
    lines = [
        {"organizer": "erin@fabrikam.com", "number": "+1 212 200 1234", "at": "2020-01-10T12:00", "location": "ZW"},
        {"organizer": "erin@fabrikam.com", "number": "+1 876 209 1234", "at": "2020-01-10T12:00"},
        {"organizer": "dmitri@contoso.com", "number": "+33142685300"},
        {"organizer": "bob@contoso.com", "number": "+49 30 901820"},
        {"organizer": "alice@contoso.com", "number": "112"},
        {"organizer": "alice@contoso.com", "number": "12ab"},
        {"number": "+33142685300"},
        {"organizer": "alice@contoso.com", "number": "+33142685300", "counters": {"concurrent_organizer": 10}},
    ]
    path = tmp_path / "calls.jsonl"
    path.write_text(
        "\n".join(json.dumps(x) for x in lines[:3]) + "\n\n" + "\n".join(json.dumps(x) for x in lines[3:]) + "\n"
    )
    code, out, err = _explain(capsys, "--requests", str(path))
    assert code == 0 and err == ""
    assert [d["reason"] for d in out] == [
        "allowed",
        "no_entitlement",
        "no_audio_conferencing",
        "not_domestic",
        "destination_blocked",
        "number_invalid",
        "organizer_missing",
        "limit_concurrency",
    ]
    assert [d["status"] for d in out] == [200, 403, 403, 403, 403, 484, 403, 480]
    assert out[0]["bucket"] == "usca_unlimited" and out[0]["location"] == "ZW"
    assert out[7]["retry_after_s"] == 30
    for d in out:
        assert set(d) >= KEYS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json}\n", "calls.jsonl:1: not valid JSON"),
        ('{"organizer": "a"}\n[1]\n', "calls.jsonl:1: 'number' is required"),
        ('{"organizer": "a", "number": "1"}\n[1]\n', "calls.jsonl:2: expected a JSON object"),
        ('{"organizer": "a", "numbr": "1"}\n', "calls.jsonl:1: unknown key 'numbr'"),
        ('{"organizer": "a", "number": 33142685300}\n', "'number' must be a string"),
        ('{"organizer": "a", "number": "1", "at": "tomorrow"}\n', "'at': expected an ISO 8601"),
        ('{"organizer": "a", "number": "1", "counters": {"pool": 3}}\n', "counters.pool: unknown counter"),
        (
            '{"organizer": "a", "number": "1", "counters": {"concurrent_tenant": -1}}\n',
            "counters.concurrent_tenant: expected a number >= 0",
        ),
        (
            '{"organizer": "a", "number": "1", "counters": {"addon_used_minutes": NaN}}\n',
            "counters.addon_used_minutes: expected a number >= 0, got nan",
        ),
        (
            '{"organizer": "a", "number": "1", "counters": {"credits_balance": Infinity}}\n',
            "counters.credits_balance: expected a number >= 0, got inf",
        ),
        ("\n\n", "no requests"),
    ],
)
def test_bad_input_lines_exit_2_with_one_line(capsys, tmp_path, content, message):
    path = tmp_path / "calls.jsonl"
    path.write_text(content)
    code = main(["explain", "--config", EXAMPLE, "--requests", str(path)])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("organizer", "at"),
    [
        ("alice@contoso.com", "0001-01-01T00:00+05:00"),  # before year 1 in UTC
        ("alice@contoso.com", "9999-12-31T23:59-05:00"),  # after 9999 in UTC
        ("alice@contoso.com", "9999-12-31T23:30+00:00"),  # fine in UTC, after 9999 in Europe/Paris
        ("erin@fabrikam.com", "0001-01-01T00:00Z"),  # before year 1 in America/New_York
        ("alice@contoso.com", "0001-01-01T00:00"),  # naive Paris time (LMT +0:09) is before year 1 in UTC
        ("nobody@example.com", "0001-01-01T00:00+01:00"),  # unknown organiser: checked in UTC
    ],
)
def test_at_out_of_datetime_range_is_one_line_exit_2(capsys, organizer, at):
    code = main(["explain", "--config", EXAMPLE, "--organizer", organizer, "--number", "+33142685300", "--at", at])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("dialout-gw explain: command line: 'at': ") and "out of range" in err
    assert err.count("\n") == 1 and "Traceback" not in err and "OverflowError" not in err


@pytest.mark.parametrize("at", ["0001-01-02T00:00+05:00", "9999-12-31T12:00-05:00"])
def test_at_near_the_edges_but_in_range_is_decided(capsys, at):
    code, (d,), err = _explain(capsys, "--organizer", "alice@contoso.com", "--number", "+33142685300", "--at", at)
    assert code == 0 and err == "" and d["reason"] == "allowed"


def test_bad_config_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[organizers]]\nid = "x"\ntenant = "none"\nusage_location = "FR"\n')
    code = main(["explain", "--config", str(bad), "--organizer", "x", "--number", "1"])
    _, err = capsys.readouterr()
    assert code == 2 and "organizers[0].tenant: expected" in err and str(bad) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--organizer", "alice@contoso.com"],  # no number
        ["--requests", "x.jsonl", "--number", "1"],  # both modes
        ["--requests", "/nonexistent/x.jsonl"],
        ["--number", "1", "--counters", "[]"],
    ],
)
def test_operator_mistakes_exit_2(capsys, argv):
    code = main(["explain", "--config", EXAMPLE, *argv])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("dialout-gw explain: ")


def test_help_mentions_the_modes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--help"])
    out, _ = capsys.readouterr()
    assert exc.value.code == 0
    assert "--requests" in out and "counters" in out and "--at" in out


# --- the readable form: on a terminal, or with --format text ------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (14400, "4 h"),
        (750, "12 min 30 s"),
        (180, "3 min"),
        (45, "45 s"),
        (0, "0 s"),
        (3661, "1 h 1 min 1 s"),
        (90000, "25 h"),
        (89.6, "1 min 30 s"),
        (None, "unlimited"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _decision(capsys, *argv: str) -> dict:
    code, (d,), _ = _explain(capsys, "--json", *argv)
    assert code == 0
    return d


def test_render_allowed_call(capsys):
    d = _decision(
        capsys,
        "--organizer",
        "alice@contoso.com",
        "--number",
        "+33142685300",
        "--at",
        "2018-05-01T10:00",
        "--location",
        "ZW",
    )
    text = render_decision(d)
    lines = text.splitlines()
    assert lines[0] == "ALLOWED +33142685300 (FR, fixed_line) for alice@contoso.com, tenant contoso"
    assert "  status       200" in lines and "  reason       allowed" in lines
    assert "  bucket       promotion (unlimited), then tenant_pool (25 h), credits (83 h 20 min)" in lines
    assert "  authorised   4 h" in lines
    assert "  at           2018-05-01 10:00:00 Europe/Paris (+02:00)" in lines
    assert "  location     ZW (reported; logged only)" in lines
    assert "  explanation  " + d["explanation"] in lines
    # The trace: one indented, marked step per rule, details in one column.
    steps = lines[lines.index("  trace") + 1 :]
    assert len(steps) == len(d["trace"])
    assert steps[1].startswith("    ✓ identity            organiser alice@contoso.com")
    assert (
        steps[0].startswith("    · location ")
        and steps[-1] == "    ✓ duration            14400 s (global maximum 14400 s)"
    )


def test_render_denied_call_marks_the_failing_rule_and_skips(capsys):
    d = _decision(capsys, "--organizer", "bob@contoso.com", "--number", "+49 30 901820", "--at", "2019-03-01T09:00")
    text = render_decision(d)
    assert text.startswith("DENIED +4930901820 (DE, fixed_line) for bob@contoso.com, tenant contoso\n")
    assert "  status       403\n  reason       not_domestic\n" in text
    assert "authorised" not in text and "bucket" not in text
    assert text.endswith("    ✗ policy        domestic: DE is not FR")

    d = _decision(
        capsys,
        "--organizer",
        "alice@contoso.com",
        "--number",
        "0142685300",
        "--at",
        "2020-01-10T12:00",
        "--counters",
        '{"pool_used_minutes": 1497, "credits_balance": 0}',
    )
    text = render_decision(d)
    assert "  bucket       tenant_pool (3 min)\n  authorised   3 min\n" in text
    assert "    – bucket_promotion    no active promotion covers FR on 2020-01-10" in text
    assert "    – bucket_credits      balance 0" in text

    d = _decision(
        capsys,
        "--organizer",
        "alice@contoso.com",
        "--number",
        "+33142685300",
        "--counters",
        '{"concurrent_organizer": 10}',
    )
    assert "  retry after  30 s\n" in render_decision(d)
    d = _decision(capsys, "--number", "12ab")
    assert render_decision(d).startswith("DENIED\n  status       403\n  reason       organizer_missing\n")


def test_render_wraps_to_the_width_and_falls_back_to_ascii_marks(capsys):
    d = _decision(capsys, "--organizer", "bob@contoso.com", "--number", "+49 30 901820", "--at", "2019-03-01T09:00")
    lines = render_decision(d, width=72, marks=ASCII_MARKS).splitlines()
    assert max(len(line) for line in lines) <= 72
    explanation = [i for i, line in enumerate(lines) if line.startswith("  explanation  ")][0]
    assert lines[explanation + 1].startswith(" " * len("  explanation  ")) and lines[explanation + 1].strip()
    assert (
        "    x policy        domestic: DE is not FR" in lines
        and "    + licence       Audio Conferencing subscription" in lines
    )
    assert render_decision(d, where="calls.jsonl:4").startswith("calls.jsonl:4: DENIED +4930901820")


def test_format_text_prints_the_verdict_and_json_stays_the_default_when_piped(capsys):
    argv = ["--organizer", "alice@contoso.com", "--number", "+33142685300", "--at", "2018-05-01T10:00"]
    assert main(["explain", "--config", EXAMPLE, *argv, "--format", "text"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("ALLOWED +33142685300") and "  authorised   4 h\n" in out
    for extra in ([], ["--json"], ["--format", "json"]):
        assert main(["explain", "--config", EXAMPLE, *argv, *extra]) == 0
        out, _ = capsys.readouterr()
        assert json.loads(out)["bucket"] == "promotion" and out.count("\n") == 1
    code = main(["explain", "--config", EXAMPLE, *argv, "--format", "text", "--pretty"])
    _, err = capsys.readouterr()
    assert code == 2 and "--pretty" in err


def test_format_text_for_many_requests_separates_them(capsys, tmp_path):
    path = tmp_path / "calls.jsonl"
    path.write_text('{"organizer": "alice@contoso.com", "number": "+33142685300"}\n{"number": "+33142685300"}\n')
    assert main(["explain", "--config", EXAMPLE, "--requests", str(path), "--format", "text"]) == 0
    out, _ = capsys.readouterr()
    first, second = out.rstrip("\n").split("\n\n")
    assert first.startswith(f"{path}:1: ALLOWED") and second.startswith(f"{path}:2: DENIED")


def test_on_a_terminal_explain_is_readable_by_default(monkeypatch):
    code, shown = run_on_a_terminal(
        monkeypatch,
        [
            "explain",
            "--config",
            EXAMPLE,
            "--organizer",
            "bob@contoso.com",
            "--number",
            "+49 30 901820",
            "--at",
            "2019-03-01T09:00",
        ],
        columns=60,
    )
    assert code == 0
    assert shown.startswith("DENIED +4930901820 (DE, fixed_line)") and "✗ policy" in shown
    assert max(len(line) for line in shown.splitlines()) <= 60  # wrapped to the terminal
    code, shown = run_on_a_terminal(monkeypatch, ["explain", "--config", EXAMPLE, "--number", "+33142685300", "--json"])
    assert code == 0 and json.loads(shown)["reason"] == "organizer_missing"
