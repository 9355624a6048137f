"""Stateless answers for the requests pjsua leaves unanswered or answers wrongly.

pjsua2 gives Python no hook for requests other than INVITE. Out of dialog,
pjsua handles INVITE (mod-pjsua), OPTIONS (mod-pjsua-options, always 200),
MESSAGE and SUBSCRIBE; pjsip's endpoint silently drops anything no module
claims ("... was dropped/unhandled by any modules"). RFC 3261 §8.2 wants an
answer to every request but ACK. This module registers two pjsip modules
into the running endpoint with ctypes:

* ``mod-gw-precheck`` (priority PJSIP_MOD_PRIORITY_APPLICATION - 1 = 63,
  after the transaction, UA and dialog-usage layers, before pjsua's
  handlers): rejects malformed or unsupportable non-INVITE requests pjsua
  would otherwise answer 200 — 400 when the CSeq method differs from the
  request method or Content-Length appears more than once, 420 with
  ``Unsupported`` for Require option tags the endpoint does not support.
* ``mod-gw-fallback`` (priority PJSIP_MOD_PRIORITY_APPLICATION + 1 = 65,
  after every pjsua module): answers what nobody claimed — 405 with
  ``Allow`` for a standard method the gateway does not implement (REGISTER,
  PUBLISH, ...), 501 for an unknown method, 481 for a method it implements
  but only inside a dialog or transaction that does not exist (BYE, CANCEL,
  ...).

Both only touch requests outside any dialog (no To tag) and never ACK;
INVITE is left to pjsua and gateway/service.py. Every answer is stateless
(``pjsip_endpt_respond_stateless``, RFC 4475 §3.2.1): no transaction, no
timers. Anything unexpected (a layout check failing, a pjsip error, a
Python exception) makes the module decline the request, which is exactly
pjsip's behaviour without it.

Struct layouts: only layouts that do not depend on pjproject's build
configuration are declared (pj_str_t, pjsip_module, the pjsip_hdr members,
pjsip_fromto_hdr, pjsip_msg's request line). ``pjsip_rx_data.msg_info``
sits after a packet buffer of PJSIP_MAX_PKT_LEN bytes, so its offset is
found, not assumed: ``pjsip_rx_data_get_info(rdata)`` returns the pointer it
stores in ``rdata->msg_info.info``, the word holding that pointer locates
the struct, and the neighbouring pointers are cross-checked against
``pjsip_msg_find_hdr`` before the offset is trusted; it is re-checked on
every request.

pjsua2 runs with threadCnt=0 here, so the callbacks come on the thread that
polls ``libHandleEvents``.
"""

from __future__ import annotations

import ctypes
import re
from ctypes import POINTER, Structure, c_char_p, c_int, c_size_t, c_ssize_t, c_void_p
from dataclasses import dataclass

from gateway.logs import get_logger

PJ_SUCCESS = 0
PJSIP_MOD_PRIORITY_APPLICATION = 64
PRECHECK_PRIORITY = PJSIP_MOD_PRIORITY_APPLICATION - 1
FALLBACK_PRIORITY = PJSIP_MOD_PRIORITY_APPLICATION + 1
PJSIP_REQUEST_MSG = 0

# Methods defined by RFC 3261 and its extensions: known, so 405 rather than
# 501 when the gateway does not implement them (RFC 3261 §8.2.1, §21.5.2).
STANDARD_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER",  # RFC 3261
    "PRACK",       # RFC 3262
    "SUBSCRIBE", "NOTIFY",  # RFC 6665
    "PUBLISH",     # RFC 3903
    "INFO",        # RFC 6086
    "REFER",       # RFC 3515
    "MESSAGE",     # RFC 3428
    "UPDATE",      # RFC 3311
})

_INFO_RE = re.compile(r"^Request msg ([^/\s]+)/cseq=")
_TOKEN_LIST_SPLIT = re.compile(r"[\s,]+")
_MAX_HEADERS = 1000
# rdata->msg_info lies after the PJSIP_MAX_PKT_LEN packet buffer (at 4424 bytes with pjsip's default
# 4000-byte packets); the scan stops at the first word equal to the info pointer, which is inside the
# struct, and this bound only caps a search that cannot fail.
_MAX_SCAN = 128 * 1024


# --- the pure part ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def method_from_info(info: str) -> str | None:
    """The method in pjsip_rx_data_get_info's text for a request
    ("Request msg REGISTER/cseq=8/call-id=... (rdata0x...)"), else None."""
    m = _INFO_RE.match(info or "")
    return m.group(1) if m else None


def header_value(printed: str) -> str:
    """The value part of a header as pjsip prints it ("Allow: INVITE, ACK")."""
    return printed.split(":", 1)[1].strip() if ":" in printed else ""


def token_list(value: str) -> list[str]:
    """A comma-separated token list (Allow, Require, Supported) as a list."""
    return [t for t in _TOKEN_LIST_SPLIT.split(value or "") if t]


def cseq_method_of(value: str) -> str | None:
    """The method of a CSeq value ("8 INVITE" -> "INVITE")."""
    parts = (value or "").split()
    return parts[1] if len(parts) == 2 else None


def _warning(text: str) -> tuple[str, str]:
    return ("Warning", f'399 - "{text}"')


def precheck_answer(method: str, cseq_methods: list[str | None], content_lengths: int,
                    require_tags: list[str], supported: frozenset[str], allowed: frozenset[str]) -> Answer | None:
    """What ``mod-gw-precheck`` answers to an out-of-dialog non-INVITE,
    non-ACK request before pjsua sees it; None to let it through."""
    if method in ("INVITE", "ACK"):
        return None
    if len(cseq_methods) != 1 or cseq_methods[0] != method:
        got = ", ".join(m or "?" for m in cseq_methods) or "none"
        text = f"CSeq method ({got}) does not match the request method {method}"
        return Answer(400, "Bad Request", (_warning(text),))
    if content_lengths > 1:
        return Answer(400, "Bad Request", (_warning("more than one Content-Length"),))
    if method in allowed:  # method inspection (405/501) comes before Require (RFC 3261 §8.2.1-2)
        unsupported = [t for t in dict.fromkeys(require_tags) if t not in supported]
        if unsupported:
            return Answer(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
    return None


def fallback_answer(method: str, allowed: frozenset[str]) -> Answer | None:
    """What ``mod-gw-fallback`` answers to an out-of-dialog request no other
    pjsip module claimed; None for ACK (never answered)."""
    if method == "ACK":
        return None
    if method in allowed or method == "CANCEL":
        # Implemented, but only for a dialog or transaction that does not exist.
        return Answer(481, "Call/Transaction Does Not Exist")
    if method in STANDARD_METHODS:
        return Answer(405, "Method Not Allowed", (("Allow", ", ".join(sorted(allowed, key=_allow_order))),))
    return Answer(501, "Not Implemented")


def _allow_order(method: str) -> tuple[int, str]:
    order = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
    return (order.index(method), "") if method in order else (len(order), method)


# --- pjsip structs (layouts independent of the build configuration) ---------------------------


class PjStr(Structure):
    _fields_ = [("ptr", c_void_p), ("slen", c_ssize_t)]


class PjsipHdr(Structure):
    """PJSIP_DECL_HDR_MEMBER: list members, type, name, sname, vptr."""
    _fields_ = [("prev", c_void_p), ("next", c_void_p), ("type", c_int),
                ("name", PjStr), ("sname", PjStr), ("vptr", c_void_p)]


class PjsipFromToHdr(Structure):
    _fields_ = [("hdr", PjsipHdr), ("uri", c_void_p), ("tag", PjStr)]


class PjsipMethod(Structure):
    _fields_ = [("id", c_int), ("name", PjStr)]


class PjsipRequestLine(Structure):
    _fields_ = [("method", PjsipMethod), ("uri", c_void_p)]


class PjsipMsg(Structure):
    _fields_ = [("type", c_int), ("req", PjsipRequestLine), ("hdr", PjsipHdr), ("body", c_void_p)]


class PjsipMsgInfo(Structure):
    """The head of pjsip_rx_data.msg_info (its pointers only)."""
    _fields_ = [("msg_buf", c_void_p), ("len", c_int), ("msg", c_void_p), ("info", c_void_p),
                ("cid", c_void_p), ("from_", c_void_p), ("to", c_void_p), ("via", c_void_p),
                ("cseq", c_void_p)]


_INFO_FIELD = PjsipMsgInfo.info.offset
_HDR_IN_MSG = PjsipMsg.hdr.offset

RX_CB = ctypes.CFUNCTYPE(c_int, c_void_p)
TX_CB = ctypes.CFUNCTYPE(c_int, c_void_p)
LOAD_CB = ctypes.CFUNCTYPE(c_int, c_void_p)
VOID_CB = ctypes.CFUNCTYPE(c_int)
TSX_CB = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)


class PjsipModule(Structure):
    """pjsip/include/pjsip/sip_module.h struct pjsip_module."""
    _fields_ = [("prev", c_void_p), ("next", c_void_p), ("name", PjStr), ("id", c_int), ("priority", c_int),
                ("load", LOAD_CB), ("start", VOID_CB), ("stop", VOID_CB), ("unload", VOID_CB),
                ("on_rx_request", RX_CB), ("on_rx_response", RX_CB),
                ("on_tx_request", TX_CB), ("on_tx_response", TX_CB), ("on_tsx_state", TSX_CB)]


def _s(p: PjStr) -> str:
    if not p.ptr or p.slen <= 0:
        return ""
    return ctypes.string_at(p.ptr, p.slen).decode("latin-1")


def _load_lib():
    import pjsua2

    lib = ctypes.CDLL(pjsua2._pjsua2.__file__)  # the already-loaded extension: same pjsip instance
    sig = {
        "pjsua_get_pjsip_endpt": (c_void_p, []),
        "pjsip_endpt_register_module": (c_int, [c_void_p, c_void_p]),
        "pjsip_endpt_unregister_module": (c_int, [c_void_p, c_void_p]),
        "pjsip_endpt_get_capability": (c_void_p, [c_void_p, c_int, c_void_p]),
        "pjsip_endpt_respond_stateless": (c_int, [c_void_p, c_void_p, c_int, POINTER(PjStr), c_void_p, c_void_p]),
        "pjsip_rx_data_get_info": (c_void_p, [c_void_p]),
        "pjsip_rdata_get_tsx": (c_void_p, [c_void_p]),
        "pjsip_rdata_get_dlg": (c_void_p, [c_void_p]),
        "pjsip_msg_find_hdr": (c_void_p, [c_void_p, c_int, c_void_p]),
        "pjsip_hdr_print_on": (c_int, [c_void_p, c_char_p, c_size_t]),
        "pjsip_generic_string_hdr_create": (c_void_p, [c_void_p, POINTER(PjStr), POINTER(PjStr)]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)  # AttributeError if the wheel does not export it
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class _RequestView:
    """Read-only view of one incoming request's parsed pjsip message."""

    def __init__(self, fb: "PjsipFallback", rdata: int, mi: PjsipMsgInfo):
        self.fb, self.rdata, self.mi = fb, rdata, mi
        self.msg = PjsipMsg.from_address(mi.msg)
        self.method = _s(self.msg.req.method.name)
        self.to_tag = _s(PjsipFromToHdr.from_address(mi.to).tag)

    def headers(self, htype: int):
        """Printed text of every header of that type, in order."""
        end = self.mi.msg + _HDR_IN_MSG
        out, h, n = [], self.msg.hdr.next, 0
        while h and h != end and n < _MAX_HEADERS:
            hdr = PjsipHdr.from_address(h)
            if hdr.type == htype:
                out.append(self.fb.print_hdr(h))
            h, n = hdr.next, n + 1
        return out


class PjsipFallback:
    """The two modules, registered into one pjsua endpoint."""

    def __init__(self, lib, endpt: int, pj):
        self.lib, self.endpt = lib, endpt
        self.log = get_logger(component="pjsip_fallback")
        self.H = {name: getattr(pj, f"PJSIP_H_{name}") for name in
                  ("TO", "CSEQ", "CALL_ID", "ALLOW", "SUPPORTED", "REQUIRE", "CONTENT_LENGTH")}
        self._msg_info_offset: int | None = None
        self.disabled: str | None = None
        self.answered = 0
        # Everything C holds a pointer to stays referenced here for the process lifetime.
        self._keep: list = []
        self.modules = [self._module(b"mod-gw-precheck", PRECHECK_PRIORITY, self._on_precheck),
                        self._module(b"mod-gw-fallback", FALLBACK_PRIORITY, self._on_fallback)]

    def _module(self, name: bytes, priority: int, handler) -> PjsipModule:
        cname = ctypes.create_string_buffer(name)
        cb = RX_CB(self._guarded(handler))
        mod = PjsipModule()
        mod.name = PjStr(ctypes.addressof(cname), len(name))
        mod.id, mod.priority, mod.on_rx_request = -1, priority, cb
        self._keep += [cname, cb, mod]
        return mod

    def register(self) -> None:
        done = []
        for mod in self.modules:
            status = self.lib.pjsip_endpt_register_module(self.endpt, ctypes.byref(mod))
            if status != PJ_SUCCESS:
                for m in done:
                    self.lib.pjsip_endpt_unregister_module(self.endpt, ctypes.byref(m))
                raise RuntimeError(f"pjsip_endpt_register_module({_s(mod.name)}) failed: status {status}")
            done.append(mod)

    # --- C helpers ---

    def print_hdr(self, hdr: int) -> str | None:
        buf = ctypes.create_string_buffer(8192)  # per call: nothing shared if pjsua ever gets worker threads
        n = self.lib.pjsip_hdr_print_on(hdr, buf, len(buf) - 1)
        return buf.raw[:n].decode("latin-1") if n >= 0 else None  # None: too long to print

    def capability(self, htype: str) -> frozenset[str]:
        hdr = self.lib.pjsip_endpt_get_capability(self.endpt, self.H[htype], None)
        printed = self.print_hdr(hdr) if hdr else None
        return frozenset(token_list(header_value(printed or "")))

    def _locate_msg_info(self, rdata: int, info: int) -> PjsipMsgInfo | None:
        """rdata->msg_info, found via the info pointer and cross-checked."""
        if self._msg_info_offset is None:
            word = ctypes.sizeof(c_void_p)
            for off in range(_INFO_FIELD, _MAX_SCAN, word):
                if c_void_p.from_address(rdata + off).value == info:
                    mi = PjsipMsgInfo.from_address(rdata + off - _INFO_FIELD)
                    if self._consistent(rdata, mi, off):
                        self._msg_info_offset = off - _INFO_FIELD
                        self.log.debug("pjsip_fallback_layout", msg_info_offset=self._msg_info_offset)
                        return mi
                    break
            self.disabled = "pjsip_rx_data.msg_info not found where pjsip_rx_data_get_info points"
            self.log.warning("pjsip_fallback_disabled", why=self.disabled)
            return None
        mi = PjsipMsgInfo.from_address(rdata + self._msg_info_offset)
        if mi.info != info or not mi.msg or not mi.to or not mi.cseq:
            self.disabled = "pjsip_rx_data.msg_info layout check failed"
            self.log.warning("pjsip_fallback_disabled", why=self.disabled)
            return None
        return mi

    def _consistent(self, rdata: int, mi: PjsipMsgInfo, info_off: int) -> bool:
        if not (mi.msg and mi.to and mi.cseq and mi.cid and mi.msg_buf and mi.len > 0):
            return False
        if not rdata < mi.msg_buf < rdata + info_off:  # msg_buf points into pkt_info.packet
            return False
        if PjsipMsg.from_address(mi.msg).type != PJSIP_REQUEST_MSG:
            return False
        find = self.lib.pjsip_msg_find_hdr
        return (find(mi.msg, self.H["TO"], None) == mi.to and find(mi.msg, self.H["CSEQ"], None) == mi.cseq
                and find(mi.msg, self.H["CALL_ID"], None) == mi.cid)

    def _request(self, rdata: int, skip: frozenset[str] = frozenset()) -> _RequestView | None:
        """The request, if it is one these modules may answer (and its
        method is not in ``skip``)."""
        if self.disabled or not rdata:
            return None
        info = self.lib.pjsip_rx_data_get_info(rdata)
        if not info:
            return None
        text = ctypes.string_at(info).decode("latin-1")
        info_method = method_from_info(text)
        if info_method is None or info_method in skip or info_method == "ACK":
            return None  # a response or an unexpected text; a method left to others
        mi = self._locate_msg_info(rdata, info)
        if mi is None:
            return None
        req = _RequestView(self, rdata, mi)
        if req.method != info_method:
            self.disabled = f"method mismatch: struct {req.method!r}, info {info_method!r}"
            self.log.warning("pjsip_fallback_disabled", why=self.disabled)
            return None
        if req.method == "ACK" or req.to_tag:
            return None  # never answer ACK; in-dialog requests belong to the dialog layer
        if self.lib.pjsip_rdata_get_tsx(rdata) or self.lib.pjsip_rdata_get_dlg(rdata):
            return None  # someone already owns it
        return req

    def _respond(self, req: _RequestView, answer: Answer, module: str) -> bool:
        pool = c_void_p.from_address(req.rdata).value  # rdata->tp_info.pool: the struct's first member
        if not pool:
            return False
        head = PjsipHdr()
        head.prev = head.next = ctypes.addressof(head)
        keep = []
        for name, value in answer.headers:
            n, v = name.encode("latin-1"), value.encode("latin-1")
            keep += [n, v]
            hname = PjStr(ctypes.cast(c_char_p(n), c_void_p).value, len(n))
            hvalue = PjStr(ctypes.cast(c_char_p(v), c_void_p).value, len(v))
            h = self.lib.pjsip_generic_string_hdr_create(pool, ctypes.byref(hname), ctypes.byref(hvalue))
            if not h:
                return False
            node = PjsipHdr.from_address(h)
            node.prev, node.next = head.prev, ctypes.addressof(head)
            PjsipHdr.from_address(head.prev).next = h
            head.prev = h
        reason = answer.reason.encode("latin-1")
        st_text = PjStr(ctypes.cast(c_char_p(reason), c_void_p).value, len(reason))
        status = self.lib.pjsip_endpt_respond_stateless(
            self.endpt, req.rdata, answer.status, ctypes.byref(st_text),
            ctypes.addressof(head) if answer.headers else None, None)
        if status != PJ_SUCCESS:
            # e.g. the TCP connection is gone: pjsip then logs the request as unhandled, as without us
            self.log.info("pjsip_fallback_respond_failed", module=module, method=req.method,
                          status=answer.status, pj_status=status)
            return False
        self.answered += 1
        self.log.debug("pjsip_fallback_answered", module=module, method=req.method, status=answer.status)
        return True

    # --- the callbacks ---

    def _guarded(self, handler):
        def cb(rdata):
            try:
                return 1 if handler(rdata) else 0
            except Exception:  # decline: pjsip then does what it did without us
                self.log.exception("pjsip_fallback_failed")
                return 0
        return cb

    def _on_precheck(self, rdata: int) -> bool:
        req = self._request(rdata, skip=frozenset({"INVITE"}))  # INVITE: pjsua and gateway/service.py
        if req is None:
            return False
        cseq_methods = [cseq_method_of(header_value(t or "")) for t in req.headers(self.H["CSEQ"])]
        require = [tag for t in req.headers(self.H["REQUIRE"]) for tag in token_list(header_value(t or ""))]
        answer = precheck_answer(req.method, cseq_methods, len(req.headers(self.H["CONTENT_LENGTH"])), require,
                                 self.capability("SUPPORTED"), self.capability("ALLOW"))
        return answer is not None and self._respond(req, answer, "precheck")

    def _on_fallback(self, rdata: int) -> bool:
        req = self._request(rdata)
        if req is None:
            return False
        answer = fallback_answer(req.method, self.capability("ALLOW"))
        return answer is not None and self._respond(req, answer, "fallback")


_installed: dict[int, PjsipFallback] = {}
_ever_installed: list[PjsipFallback] = []  # never shrinks: pjsip may still hold pointers into old ones


def install() -> PjsipFallback:
    """Register the modules into the running pjsua endpoint (after
    ``libStart()``), once per endpoint. Raises on any failure; nothing is
    left registered then."""
    import pjsua2 as pj

    lib = _load_lib()
    endpt = lib.pjsua_get_pjsip_endpt()
    if not endpt:
        raise RuntimeError("pjsua has no pjsip endpoint (libCreate/libInit not called?)")
    if endpt in _installed and _installed[endpt].modules[0].id >= 0:
        return _installed[endpt]
    fb = PjsipFallback(lib, endpt, pj)
    fb.register()
    _installed[endpt] = fb
    _ever_installed.append(fb)
    return fb


def install_or_warn() -> PjsipFallback | None:
    """``install()``, but a failure only logs a warning: the gateway then
    runs as it did without these modules."""
    try:
        return install()
    except Exception as exc:
        get_logger(component="pjsip_fallback").warning("pjsip_fallback_not_installed", error=repr(exc))
        return None
