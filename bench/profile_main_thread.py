"""The gateway with per-component CPU accounting on its SIP thread.

    .venv/bin/python bench/profile_main_thread.py run --config FILE

Runs `dialout-gw` with the hot functions of the SIP thread wrapped: each
wrapper adds the thread CPU time (time.thread_time_ns) spent in that
function, less what its wrapped callees took, to the function's account.
At exit the accounts go to $INSTR_OUT (default var/profile_main_thread.json)
as {"acc": {name: ns}, "cnt": {name: calls}}; divide by the calls relayed.
The wrappers cost about 1 µs each (two clock reads), some 60 µs per call in
all: compare the parts, not the total, with an unwrapped run.
bench/README.md ("Where the CPU goes") shows how the table was made.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gateway._sipcore as sc

import call.machine as machine
import gateway.engine as engine
import gateway.metrics as metrics
import gateway.service as service
import gateway.sipstack as sipstack
import gateway.trunks as trunks
import store.writer as writer

spent: dict[str, int] = defaultdict(int)
calls: dict[str, int] = defaultdict(int)
_stack: list[int] = []
_MAIN = threading.main_thread()


def _wrapped(fn, label: str):
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not _MAIN:
            return fn(*args, **kwargs)
        started = time.thread_time_ns()
        _stack.append(0)
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.thread_time_ns() - started
            children = _stack.pop()
            spent[label] += elapsed - children
            calls[label] += 1
            if _stack:
                _stack[-1] += elapsed

    return wrapper


def _wrap(owner, name: str, label: str) -> None:
    setattr(owner, name, _wrapped(getattr(owner, name), label))


for name in ("poll", "dial", "answer", "ack", "send", "hangup", "respond", "cancel"):
    _wrap(sc, name, f"C: sc.{name}")
_wrap(sipstack.SipStack, "poll", "loop")
_wrap(sipstack.SipStack, "_run_due", "loop: jobs and timers")
_wrap(engine.Engine, "on_event", "engine: on_event")
_wrap(engine.Engine, "feed", "engine: feed")
_wrap(engine.Engine, "_carry_out", "engine: carry out actions")
_wrap(machine.Call, "handle", "call machine")
_wrap(service.GatewayService, "on_invite", "service: on_invite")
_wrap(service.GatewayService, "_read_invite", "service: read the INVITE (sip/)")
_wrap(service.GatewayService, "_admit_on_ledger", "service: submit admission")
_wrap(service.GatewayService, "_plan", "service: plan")
_wrap(service.GatewayService, "call_finished", "service: call_finished")
_wrap(service.GatewayService, "_canonical_line", "service: canonical line")
_wrap(service.GatewayService, "_account", "service: account")
_wrap(service.GatewayService, "call_answered", "service: call_answered")
_wrap(service, "assess", "policy: assess")
_wrap(service, "check_sdp", "sip: check_sdp")
_wrap(writer.LedgerWriter, "submit", "ledger: submit")
_wrap(trunks.TrunkSide, "record", "trunks: record")
_wrap(trunks.TrunkSide, "routes", "trunks: routes")
_wrap(metrics.Metrics, "call_finished", "metrics: call_finished")
_wrap(metrics.Metrics, "trunk_attempt", "metrics: trunk_attempt")


def _dump() -> None:
    out = Path(os.environ.get("INSTR_OUT", "var/profile_main_thread.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"acc": spent, "cnt": calls}))


atexit.register(_dump)

if __name__ == "__main__":
    from gateway.cli import main

    sys.argv = ["dialout-gw", *sys.argv[1:]]
    sys.exit(main())
