"""A pjsua2 UAS that rings every call and never answers: the capacity probe.

Started by tests/integration/test_capacity.py. It answers each INVITE with
180 and keeps the call until the caller CANCELs it, counting the peak number
of calls ringing at once. On SIGTERM it prints one JSON line and exits.
"""

import json
import signal
import sys

import pjsua2 as pj

from gateway.logs import configure_logging
from gateway.sipstack import Listener, SipStack


class RingingAccount(pj.Account):
    def __init__(self):
        super().__init__()
        self.live: dict[int, pj.Call] = {}
        self.peak = 0
        self.total = 0
        self.refused = 0

    def onIncomingCall(self, prm):
        call = RingingCall(self, prm.callId)
        self.live[prm.callId] = call
        self.total += 1
        op = pj.CallOpParam()
        op.statusCode = 180
        try:
            call.answer(op)
        except pj.Error:
            self.refused += 1
            return
        self.peak = max(self.peak, len(self.live))


class RingingCall(pj.Call):
    def __init__(self, account, call_id):
        super().__init__(account, call_id)
        self.account = account

    def onCallState(self, prm):
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            call_id = self.getId()
            stack.after_poll(lambda: self.account.live.pop(call_id, None))


def main(port: int, max_calls: int) -> None:
    global stack
    configure_logging("warning", "json", stream=sys.stderr)
    stack = SipStack(max_calls=max_calls)
    stack.listen(Listener("udp", "127.0.0.1", port))
    stack.start()
    acc_cfg = pj.AccountConfig()
    acc_cfg.idUri = f"sip:uas@127.0.0.1:{port}"
    acc_cfg.mediaConfig.useLoopMedTp = True
    account = RingingAccount()
    account.create(acc_cfg, True)
    signal.signal(signal.SIGTERM, lambda *_: stack.stop())
    print(json.dumps({"ready": True}), flush=True)
    stack.run()
    print(json.dumps({"peak": account.peak, "total": account.total, "refused": account.refused}), flush=True)
    account.shutdown()
    stack.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
