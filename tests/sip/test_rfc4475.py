"""parse_request against the RFC 4475 torture messages (byte-exact files in
``tests/data/rfc4475``, vendored with its README).

Every file has an expected outcome below, so a parser that starts accepting
an invalid message, or refusing a valid one, fails here. Files are decoded
as pjsua2's SWIG layer decodes ``rdata.wholeMsg``: UTF-8 with
``surrogateescape``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from sip import SipParseError, parse_address, parse_request, parse_uri

CORPUS = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

RESPONSE = "message is a response, not a request"

# file -> (RFC 4475 section, expected). Expected is either
#   ("ok", method, Call-ID)            the request parses
#   ("error", reason, status)          SipParseError with exactly this reason
EXPECTED: dict[str, tuple[str, tuple]] = {
    # 3.1.1 valid messages: a parser must accept them.
    "wsinv.dat": ("3.1.1.01", ("ok", "INVITE", "wsinv.ndaksdj@192.0.2.1")),
    "intmeth.dat": (
        "3.1.1.02",
        ("ok", "!interesting-Method0123456789_*+`.%indeed'~", "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"),
    ),
    "esc01.dat": ("3.1.1.03", ("ok", "INVITE", "esc01.239409asdfakjkn23onasd0-3234")),
    "escnull.dat": ("3.1.1.04", ("ok", "REGISTER", "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd")),
    "esc02.dat": ("3.1.1.05", ("ok", "RE%47IST%45R", "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf")),
    "lwsdisp.dat": ("3.1.1.06", ("ok", "OPTIONS", "lwsdisp.1234abcd@funky.example.com")),
    "longreq.dat": ("3.1.1.07", ("ok", "INVITE", "longreq.one" + "really" * 20 + "longcallid")),
    "dblreq.dat": ("3.1.1.08", ("ok", "REGISTER", "dblreq.0ha0isndaksdj99sdfafnl3lk233412")),
    "semiuri.dat": ("3.1.1.09", ("ok", "OPTIONS", "semiuri.0ha0isndaksdj")),
    "transports.dat": ("3.1.1.10", ("ok", "OPTIONS", "transports.kijh4akdnaqjkwendsasfdj")),
    "mpart01.dat": ("3.1.1.11", ("ok", "MESSAGE", "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..")),
    # 3.1.1.12/13 are valid *responses*; parse_request refuses them as such.
    "unreason.dat": ("3.1.1.12", ("error", RESPONSE, 400)),
    "noreason.dat": ("3.1.1.13", ("error", RESPONSE, 400)),
    # 3.1.2 invalid messages: must be refused, never crash.
    "badinv01.dat": ("3.1.2.01", ("error", "empty element in Via", 400)),
    "clerr.dat": ("3.1.2.02", ("error", "Content-Length exceeds the body", 400)),
    "ncl.dat": ("3.1.2.03", ("error", "malformed Content-Length", 400)),
    "scalar02.dat": ("3.1.2.04", ("error", "malformed CSeq number", 400)),
    "scalarlg.dat": ("3.1.2.05", ("error", RESPONSE, 400)),
    "quotbal.dat": ("3.1.2.06", ("error", "unterminated quoted string", 400)),
    "ltgtruri.dat": ("3.1.2.07", ("error", "Request-URI contains an unescaped illegal character", 400)),
    "lwsruri.dat": ("3.1.2.08", ("error", "malformed request line", 400)),
    "lwsstart.dat": ("3.1.2.09", ("error", "malformed request line", 400)),
    "trws.dat": ("3.1.2.10", ("error", "malformed request line", 400)),
    "escruri.dat": ("3.1.2.11", ("error", "Request-URI carries headers", 400)),
    # 3.1.2.12: a Date in EST is a semantic error; this layer does not
    # interpret Date (the gateway never uses it), so the request parses.
    "baddate.dat": ("3.1.2.12", ("ok", "INVITE", "baddate.239423mnsadf3j23lj42--sedfnm234")),
    "regbadct.dat": ("3.1.2.13", ("error", "address URI with '?' or ',' needs <>", 400)),
    "badaspec.dat": ("3.1.2.14", ("error", "address has whitespace inside <>", 400)),
    "baddn.dat": ("3.1.2.15", ("error", "unquoted display name holds separators", 400)),
    "badvers.dat": ("3.1.2.16", ("error", "unsupported SIP version", 505)),
    "mismatch01.dat": ("3.1.2.17", ("error", "CSeq method does not match the request method", 400)),
    "mismatch02.dat": ("3.1.2.18", ("error", "CSeq method does not match the request method", 400)),
    "bigcode.dat": ("3.1.2.19", ("error", RESPONSE, 400)),
    # 3.2 transaction layer: syntactically fine.
    "badbranch.dat": ("3.2.0.10", ("ok", "OPTIONS", "badbranch.sadonfo23i420jv0as0derf3j3n")),
    # 3.3 application layer: the RFC's reaction for these is 400, so the
    # parser refuses them; the others parse and are for the application.
    "insuf.dat": ("3.3.0.10", ("error", "missing Call-ID header", 400)),
    "unkscm.dat": ("3.3.0.20", ("ok", "OPTIONS", "unkscm.nasdfasser0q239nwsdfasdkl34")),
    "novelsc.dat": ("3.3.0.30", ("ok", "OPTIONS", "novelsc.asdfasser0q239nwsdfasdkl34")),
    "unksm2.dat": ("3.3.0.40", ("ok", "REGISTER", "unksm2.daksdj@hyphenated-host.example.com")),
    "bext01.dat": ("3.3.0.50", ("ok", "OPTIONS", "bext01.0ha0isndaksdj")),
    "invut.dat": ("3.3.0.60", ("ok", "INVITE", "invut.0ha0isndaksdjadsfij34n23d")),
    "regaut01.dat": ("3.3.0.70", ("ok", "REGISTER", "regaut01.0ha0isndaksdj")),
    "multi01.dat": ("3.3.0.80", ("error", "more than one Call-ID header", 400)),
    "mcl01.dat": ("3.3.0.90", ("error", "more than one Content-Length header", 400)),
    "bcast.dat": ("3.3.1.00", ("error", RESPONSE, 400)),
    "zeromf.dat": ("3.3.1.10", ("ok", "OPTIONS", "zeromf.jfasdlfnm2o2l43r5u0asdfas")),
    "cparam01.dat": ("3.3.1.20", ("ok", "REGISTER", "cparam01.70710@saturn.example.com")),
    "cparam02.dat": ("3.3.1.30", ("ok", "REGISTER", "cparam02.70710@saturn.example.com")),
    "regescrt.dat": ("3.3.1.40", ("ok", "REGISTER", "regescrt.k345asrl3fdbv@192.0.2.1")),
    "sdp01.dat": ("3.3.1.50", ("ok", "INVITE", "sdp01.ndaksdj9342dasdd")),
    # 3.4 RFC 2543 syntax: no Max-Forwards, no branch, no Content-Length.
    "inv2543.dat": ("3.4.0.10", ("ok", "INVITE", "inv2543.1717@ift.client.example.com")),
}
# Not from the RFC, but shipped beside it: a request line without a version.
EXTRA: dict[str, tuple] = {"test.dat": ("error", "malformed request line", 400)}


def _load(name: str) -> str:
    return (CORPUS / name).read_bytes().decode("utf-8", "surrogateescape")


def test_corpus_is_present_and_complete():
    assert CORPUS.is_dir(), f"RFC 4475 corpus not found at {CORPUS} (vendored under tests/data/rfc4475)"
    readme = (CORPUS / "README.md").read_text()
    table = dict(re.findall(r"^\| (3\.\d\.\d\.\d\d) \| (\S+\.dat) \|$", readme, flags=re.M))
    assert len(table) == 49
    assert {name: section for section, name in table.items()} == {
        name: section for name, (section, _) in EXPECTED.items()
    }
    on_disk = {p.name for p in CORPUS.glob("*.dat")}
    assert on_disk == set(EXPECTED) | set(EXTRA)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(EXTRA)))
def test_torture_message(name):
    expected = EXPECTED[name][1] if name in EXPECTED else EXTRA[name]
    raw = _load(name)
    if expected[0] == "ok":
        _, method, call_id = expected
        req = parse_request(raw)
        assert req.method == method
        assert req.call_id == call_id
        assert req.header("i") == call_id
        number, cseq_method = req.cseq
        assert cseq_method == method and 0 <= number < 2**31
        assert req.headers_all("via")
    else:
        _, reason, status = expected
        with pytest.raises(SipParseError) as exc:
            parse_request(raw)
        assert (exc.value.reason, exc.value.status) == (reason, status)


def test_wsinv_details():
    req = parse_request(_load("wsinv.dat"))
    assert req.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert req.cseq == (9, "INVITE")
    assert req.header("max-forwards") == "0068"
    assert req.header("subject") == ""
    assert req.header("newfangledheader") == "newfangled value continued newfangled value"
    assert req.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert len(req.headers_all("via")) == 3
    assert req.headers_all("via")[2] == "SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239"
    assert req.header("route") == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    to = parse_address(req.header("to"))
    assert (to.uri, to.tag) == ("sip:vivekg@chair-dnrc.example.com", "1918181833n")
    frm = parse_address(req.header("from"))
    assert (frm.display_name, frm.tag) == ('J Rosenberg \\"', "98asjd8")
    contact = parse_address(req.header("m"))
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(req.body) == 150 and req.body.startswith("v=0\r\n")
    assert req.content_type == "application/sdp"


def test_valid_oddities():
    intmeth = parse_request(_load("intmeth.dat"))
    assert intmeth.header("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"
    assert parse_address(intmeth.header("from")).param("fromParam''~+*_!.-%") == (
        "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
    )
    esc01 = parse_request(_load("esc01.dat"))
    uri = parse_uri(esc01.uri)
    assert (uri.user, uri.host) == ("sips:user@example.com", "example.net")
    assert esc01.content_type == "application/sdp"  # from compact "C"
    escnull = parse_request(_load("escnull.dat"))
    assert escnull.headers_all("contact") == ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    assert parse_uri(parse_address(escnull.header("to")).uri).user == "null-\x00-null"
    esc02 = parse_request(_load("esc02.dat"))
    assert esc02.headers_all("contact") == ["<sip:alias1@host1.example.com>", "<sip:alias3@host3.example.com>"]
    assert esc02.header("C%6Fntact") == "<sip:alias2@host2.example.com>"  # a different header
    assert parse_address(parse_request(_load("lwsdisp.dat")).header("from")).display_name == "caller"
    assert len(parse_request(_load("longreq.dat")).headers_all("v")) == 34
    assert parse_request(_load("dblreq.dat")).body == ""  # the second request is discarded
    assert parse_request(_load("semiuri.dat")).headers_all("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]
    assert parse_uri(parse_request(_load("semiuri.dat")).uri).user == "user;par=u@example.net"
    assert len(parse_request(_load("transports.dat")).headers_all("via")) == 5
    mpart = parse_request(_load("mpart01.dat"))
    assert len(mpart.body.encode("utf-8", "surrogateescape")) == 553
    assert mpart.body.endswith("--7a9cbec02ceef655--\r\n")
    assert parse_request(_load("inv2543.dat")).body.startswith("v=0\r\n")


def test_mutations_only_ever_raise_sip_parse_error():
    """Truncations and byte flips of every message: parse or SipParseError,
    never another exception."""
    rng = random.Random(4475)
    alphabet = ' \t\r\n:;,<>"\\%@=/?\x00\xff' + "aZ09"
    for name in sorted(set(EXPECTED) | set(EXTRA)):
        raw = _load(name)
        cases = [raw[:cut] for cut in range(0, len(raw), 13)]
        for _ in range(60):
            i = rng.randrange(len(raw))
            cases.append(raw[:i] + rng.choice(alphabet) + raw[i + 1 :])
            cases.append(raw[:i] + raw[i + rng.randrange(1, 4) :])
        for case in cases:
            try:
                parse_request(case)
            except SipParseError:
                pass
