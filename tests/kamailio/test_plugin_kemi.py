"""The KEMI glue against a stand-in for Kamailio's KSR module: what it does when
Kamailio itself fails under it. (The happy paths run in a real Kamailio in
tests/integration/test_kamailio_plugin.py.)"""

from __future__ import annotations

import sys
import types

import pytest
from structlog.testing import capture_logs

from kamailio_plugin.core import VAR_CALL, VAR_SETTLED
from tests.kamailio.test_plugin_core import FR, invite, make_plugin, row


class FakeKSR(types.ModuleType):
    """Just enough of KSR: pseudo-variables in a dict, replies and calls recorded."""

    def __init__(self, pvs: dict, fail: set[str] = frozenset()):
        super().__init__("KSR")
        self.pvs = dict(pvs)
        self.calls: list[tuple] = []
        self.reply_headers: list[str] = []
        ksr = self

        def record(name, result=1):
            def fn(*args):
                ksr.calls.append((name, *args))
                if name in fail:
                    raise RuntimeError(f"{name} failed")
                return result

            return fn

        self.pv = types.SimpleNamespace(get=lambda k: ksr.pvs.get(k), sets=self._set, seti=self._set)
        self.tm = types.SimpleNamespace(
            t_newtran=record("t_newtran"), t_reply=record("t_reply"), t_set_fr=record("t_set_fr")
        )
        self.sl = types.SimpleNamespace(sl_send_reply=record("sl_send_reply"))
        self.hdr = types.SimpleNamespace(append_to_reply=self.reply_headers.append, remove=record("hdr.remove"))
        self.dialog = types.SimpleNamespace(
            dlg_manage=record("dlg_manage"),
            set_dlg_profile_static=record("set_dlg_profile_static"),
            dlg_set_timeout=record("dlg_set_timeout"),
        )
        for level in ("info", "warn", "err"):
            setattr(self, level, lambda text: None)

    def _set(self, key, value):
        self.pvs[key] = value


@pytest.fixture
def kemi(monkeypatch):
    def load(pvs, fail=frozenset()):
        fake = FakeKSR(pvs, fail)
        monkeypatch.setitem(sys.modules, "KSR", fake)
        sys.modules.pop("kamailio_plugin.kemi", None)
        import kamailio_plugin.kemi as module

        return module, fake

    yield load
    sys.modules.pop("kamailio_plugin.kemi", None)


def test_an_admitted_call_is_set_up_on_the_dialog_and_the_request(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    module, ksr = kemi({"$ci": "k1@bridge", "$si": "127.0.0.1", "$mb": invite(call_id="k1@bridge")})
    assert module.DialoutHandler(plugin).dialout_admit(None) == 1
    assert ksr.pvs["$ru"] == f"sip:{FR}@127.0.0.1:5080;user=phone"
    assert ksr.pvs["$dlg_ctx(timeout_route)"] == "DIALOUT_TIMEOUT" and ksr.pvs["$dlg_ctx(timeout_bye)"] == 1
    assert ksr.pvs["$dlg_var(dialout_bucket)"] == "tenant_pool" and f"$dlg_var({VAR_CALL})" in ksr.pvs
    names = [c[0] for c in ksr.calls]
    assert names.index("t_newtran") < names.index("dlg_manage") < names.index("dlg_set_timeout")
    assert ("dlg_set_timeout", 300) in ksr.calls and ("t_set_fr", 4000, 4000) in ksr.calls
    assert ("hdr.remove", "X-Dialout-Organizer") in ksr.calls


def test_a_refusal_is_answered_statefully_with_the_reason_headers(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    module, ksr = kemi({"$ci": "k2@bridge", "$si": "127.0.0.1", "$mb": invite("+4930123456", "bob@contoso.com")})
    assert module.DialoutHandler(plugin).dialout_admit(None) == -1
    assert ("t_reply", 403, "Forbidden") in ksr.calls
    assert 'Reason: SIP;cause=403;text="not_domestic"\r\n' in ksr.reply_headers
    assert "X-Dialout-Decision: deny;reason=not_domestic\r\n" in ksr.reply_headers


def test_a_retransmission_absorbed_by_tm_is_not_decided_again(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    module, ksr = kemi({"$ci": "k3@bridge", "$si": "127.0.0.1", "$mb": invite(call_id="k3@bridge")})
    ksr.tm.t_newtran = lambda: 0
    assert module.DialoutHandler(plugin).dialout_admit(None) == -1
    assert row(plugin, "k3@bridge") is None and "$ru" not in ksr.pvs


def test_when_kamailio_fails_after_the_reservation_it_is_released_and_the_bridge_gets_503(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    module, ksr = kemi(
        {"$ci": "k4@bridge", "$si": "127.0.0.1", "$mb": invite(call_id="k4@bridge")}, fail={"dlg_manage"}
    )
    with capture_logs() as logs:
        assert module.DialoutHandler(plugin).dialout_admit(None) == -1
    assert ("t_reply", 503, "Service Unavailable") in ksr.calls
    assert (
        'Reason: SIP;cause=503;text="overloaded"\r\n' in ksr.reply_headers and "Retry-After: 5\r\n" in ksr.reply_headers
    )
    ledger = row(plugin, "k4@bridge")
    assert ledger["state"] == "closed" and ledger["outcome"] == "overloaded" and ledger["billed_units"] == 0
    assert [e["event"] for e in logs].count("plugin_error") == 1


def test_an_untrusted_source_gets_no_transaction(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    module, ksr = kemi({"$ci": "k5@bridge", "$si": "198.51.100.9", "$mb": invite()})
    assert module.DialoutHandler(plugin).dialout_admit(None) == -1
    assert ksr.calls == []  # dropped: no t_newtran, no reply


def test_a_dialog_already_settled_is_not_settled_again(tmp_path, kemi):
    plugin = make_plugin(tmp_path)
    relay = plugin.admit(invite(call_id="k6@bridge"), "127.0.0.1")
    pvs = {f"$dlg_var({k})": v for k, v in relay.dialog_vars}
    pvs.update({"$dlg(callid)": "k6@bridge", f"$dlg_var({VAR_SETTLED})": "1"})
    module, ksr = kemi(pvs)
    with capture_logs() as logs:
        assert module.DialoutHandler(plugin).dialout_dialog(None, "failed") == 1
        assert module.DialoutHandler(plugin).dialout_timeout(None) == 1
    assert not [e for e in logs if e["event"] == "call"]
    assert row(plugin, "k6@bridge")["state"] == "open"  # (the sweep would settle a lost one)
