"""The plugin inside Kamailio: app_python3 calls these methods (`python_exec`).

This is the only module that imports `KSR`, Kamailio's KEMI interface; it
translates between Kamailio (pseudo-variables, dialog variables, replies,
timers) and `core.DialoutPlugin`, which decides and keeps the ledger.

Where each method is called from (examples/kamailio/kamailio.cfg):

| kamailio.cfg                                      | method                    | what it does |
|---------------------------------------------------|---------------------------|--------------|
| request_route, initial INVITE                     | `dialout_admit`           | rule 1 (trusted source), then decide and reserve: answer a refusal (-1), or set up the dialog and the new R-URI and return 1 for the cfg to `t_relay()` |
| request_route, `t_relay()` failed                 | `dialout_relay_failed`    | settle the reservation at once |
| failure_route[DIALOUT_FAILURE]                    | `dialout_failure`         | remember how the trunk leg failed; no answer at all -> `408 trunk_timeout` with the reason headers |
| event_route[dialog:start]                         | `dialout_dialog("start")` | the answer: talk time starts in the ledger |
| route[DIALOUT_TIMEOUT] (the dialog's timeout)     | `dialout_timeout`         | the authorised duration is up: settle, before the module BYEs both sides |
| event_route[dialog:end]                           | `dialout_dialog("end")`   | a BYE from either side: settle |
| event_route[dialog:failed]                        | `dialout_dialog("failed")`| no 2xx (trunk refusal, CANCEL, timeout): settle |
| rtimer, every second, own process                 | `dialout_timer`           | extend grants, heartbeat live calls, sweep lost settlements |

A method returns 1 (true in the cfg) or -1 (false). An exception is caught
here, logged with the Call-ID, and turned into the safe answer: an INVITE
that cannot be decided gets 500 and reserves nothing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import KSR  # provided by app_python3 inside Kamailio

from kamailio_plugin.core import (
    CONFIRMED,
    CONFIRMED_NO_ACK,
    PROFILE,
    VAR_ANSWERED_AT,
    VAR_CALL,
    VAR_ENDED_BY,
    VAR_OUTCOME,
    VAR_SETTLED,
    VAR_STATUS,
    DialoutPlugin,
    Reject,
    dialogs_from_rpc,
)
from policy import Reason
from sip import reject_headers

UTC = UTC
OUR_VARS = (
    "dialout_reason",
    "dialout_bucket",
    "dialout_max_s",
    "dialout_granted_s",
    "dialout_trunk",
    VAR_CALL,
    VAR_OUTCOME,
    VAR_STATUS,
    VAR_ENDED_BY,
    VAR_SETTLED,
    VAR_ANSWERED_AT,
)

# The cfg route the dialog module runs when an admitted call's timeout fires,
# before it sends the BYEs: route[DIALOUT_TIMEOUT] { python_exec("dialout_timeout"); }
TIMEOUT_ROUTE = "DIALOUT_TIMEOUT"

_started = False  # the ledger was migrated and recovered in this Kamailio's main process


class KamailioLog:
    """A text stream for structlog's JSON lines that writes to Kamailio's log,
    at the line's own level."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if not line:
                continue
            if '"level": "error"' in line or '"level": "critical"' in line:
                KSR.err(line + "\n")
            elif '"level": "warning"' in line:
                KSR.warn(line + "\n")
            else:
                KSR.info(line + "\n")
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def handler_for(config_path: str):
    """What the loader script's `mod_init()` returns: read the config, and, the first
    time in this Kamailio, migrate the ledger and settle calls a previous run left open.

    Called again in each process by `kamcmd app_python.reload`: the config is read
    afresh (calls in progress keep their decision); nothing is recovered then.
    """
    global _started
    from gateway.logs import configure_logging, get_logger
    from kamailio_plugin.settings import ConfigError, load_settings

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        KSR.err(f"dialout: {exc}\n")
        raise
    lg = settings.runtime.logging
    configure_logging(
        lg.level, "json", KamailioLog(), mask_numbers=lg.mask_numbers, mask_fields=lg.mask_fields, error_hooks=False
    )
    log = get_logger(component="kamailio")
    plugin = DialoutPlugin(settings, log)
    if not _started:
        plugin.start()
        _started = True
    tenants, organizers = plugin.imported_directory()
    if tenants or organizers:
        log.info("directory_from_ledger", tenants=len(tenants), organizers=len(organizers))
        plugin = DialoutPlugin(load_settings(config_path, imported=(tenants, organizers)), log)
    return DialoutHandler(plugin)


class DialoutHandler:
    """The object app_python3 calls; one per Kamailio process."""

    def __init__(self, plugin: DialoutPlugin):
        self.plugin = plugin
        self.log = plugin.log

    def child_init(self, rank: int) -> int:
        return 0

    # --- request_route -------------------------------------------------------------------

    def dialout_admit(self, msg, *args) -> int:
        call_id = KSR.pv.get("$ci")
        source = KSR.pv.get("$si") or ""
        if not self.plugin.is_trusted(source):
            result = self.plugin.admit(None, source)  # logged, and the answer for untrusted sources
        else:
            # The transaction first: a retransmission that comes in while we decide is
            # absorbed by tm (0), not decided twice.
            if KSR.tm.t_newtran() <= 0:
                return -1
            try:
                raw = KSR.pv.get("$mb")
            except Exception:  # bytes that are not text: the plugin answers 400
                raw = None
            try:
                result = self.plugin.admit(raw, source)
            except Exception:
                self.log.exception("plugin_error", operation="admit", call_id=call_id)
                self._reply(self._failed_reject())
                return -1
        if result is None:
            return -1  # dropped: no answer, no transaction
        if isinstance(result, Reject):
            self._reply(result)
            return -1
        try:
            # Before dlg_manage: the dialog takes these from the context when it is created.
            KSR.pv.sets("$dlg_ctx(timeout_route)", TIMEOUT_ROUTE)
            KSR.pv.seti("$dlg_ctx(timeout_bye)", 1)
            KSR.dialog.dlg_manage()
            KSR.dialog.set_dlg_profile_static(PROFILE)
            for name, value in result.dialog_vars:
                KSR.pv.sets(f"$dlg_var({name})", value)
            if result.timeout_s is not None:
                KSR.dialog.dlg_set_timeout(result.timeout_s)
            for name in result.remove_headers:
                KSR.hdr.remove(name)
            KSR.pv.sets("$ru", result.target)
            KSR.tm.t_set_fr(result.answer_timeout_ms, result.answer_timeout_ms)
        except Exception:
            self.log.exception("plugin_error", operation="relay", call_id=call_id)
            reject = self._failed_reject()
            self._settle_now(result.call_id, dict(result.dialog_vars), reject.reason, reject.status)
            self._reply(reject)
            return -1
        return 1

    def dialout_relay_failed(self, msg, *args) -> int:
        """t_relay() refused the request (no route to the trunk): nothing went out."""
        variables = self._dialog_vars()
        if VAR_CALL in variables and not variables.get(VAR_SETTLED):
            self._settle_now(KSR.pv.get("$ci"), variables, "trunk_failure", 500)
        return 1

    def _failed_reject(self) -> Reject:
        """A bug or a Kamailio error in the plugin: nothing goes out, as when the ledger fails."""
        return self.plugin.reject(
            Reason.OVERLOADED, "the dial-out plugin failed, so the call was not placed", retry_after_s=5
        )

    def _reply(self, reject: Reject) -> None:
        for name, value in reject.headers:
            KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
        if reject.stateless:
            KSR.sl.sl_send_reply(reject.status, reject.phrase)
        else:
            KSR.tm.t_reply(reject.status, reject.phrase)

    def _settle_now(self, call_id: str, variables: dict, outcome: str, status: int) -> None:
        self._mark_settled()
        self.plugin.settle(
            call_id, variables, outcome=outcome, bridge_status=status, trunk_status=None, ended_by="gateway"
        )

    # --- failure_route ----------------------------------------------------------------------

    def dialout_failure(self, msg, *args) -> int:
        """The trunk leg ended without a 2xx. Runs before dialog:failed (same process),
        so the outcome is handed over in dialog variables."""
        try:
            if KSR.pv.get(f"$dlg_var({VAR_CALL})") is None:
                return 1
            code = int(KSR.pv.get("$T_reply_code") or 0)
            if KSR.tm.t_is_canceled() > 0:
                self._set_outcome("allowed", 487, "bridge")
            elif KSR.tm.t_branch_timeout() > 0:
                # No final answer in trunk.answer_timeout_s: the gateway's 408 trunk_timeout.
                self._set_outcome("trunk_timeout", 408, "gateway")
                rt = self.plugin.runtime
                for name, value in reject_headers("trunk_timeout", 408, "the trunk did not answer", rt.gateway_host):
                    KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
                KSR.tm.t_reply(408, "Request Timeout")
            else:
                self._set_outcome("trunk_failure", code or None, "trunk")
        except Exception:
            self.log.exception("plugin_error", operation="failure_route", call_id=KSR.pv.get("$ci"))
        return 1

    def _set_outcome(self, outcome: str, status: int | None, ended_by: str) -> None:
        KSR.pv.sets(f"$dlg_var({VAR_OUTCOME})", outcome)
        KSR.pv.sets(f"$dlg_var({VAR_STATUS})", "" if status is None else str(status))
        KSR.pv.sets(f"$dlg_var({VAR_ENDED_BY})", ended_by)

    # --- route[DIALOUT_TIMEOUT]: the dialog's timeout ------------------------------------------

    def dialout_timeout(self, msg, *args) -> int:
        """The dialog module's timeout fired: the authorised duration is up. Runs in
        the timer process before the module sends its BYEs, so it is the one place
        where a cut is certain to be seen: event_route[dialog:end] is skipped for a
        timed-out dialog when a BYE's answer has already moved it to "deleted"
        (kamailio 5.6, dlg_ontimeout), which on a fast network is the usual case."""
        call_id = KSR.pv.get("$dlg(callid)")
        try:
            variables = self._dialog_vars()
            if VAR_CALL not in variables or variables.get(VAR_SETTLED):
                return 1
            self._mark_settled()
            self._timed_out(call_id, variables, int(KSR.pv.get("$dlg(state)") or 0))
        except Exception:
            self.log.exception("plugin_error", operation="timeout", call_id=call_id)
        return 1

    def _timed_out(self, call_id: str, variables: dict, state: int) -> None:
        start_ts = int(KSR.pv.get("$dlg(start_ts)") or 0)
        answered_at = datetime.fromtimestamp(start_ts, UTC) if start_ts > 0 else None
        if state == CONFIRMED_NO_ACK:
            # Answered but never ACKed (the dialog module's noack_timeout), not a cut.
            outcome, ended_by = "allowed", "ack_timeout"
        else:
            outcome, ended_by = "duration_exhausted", "gateway"
            self.log.info(
                "call_cut", call_id=call_id, reason="duration_exhausted", detail="the authorised duration is used up"
            )
        self.plugin.settle(
            call_id,
            variables,
            outcome=outcome,
            bridge_status=200,
            trunk_status=200,
            ended_by=ended_by,
            answered_at=answered_at,
        )

    # --- event_route[dialog:*] -------------------------------------------------------------

    def dialout_dialog(self, msg, event: str = "", *args) -> int:
        event = event.removeprefix("dialog:")
        call_id = KSR.pv.get("$dlg(callid)")  # not $ci: a timeout runs on a faked message
        try:
            variables = self._dialog_vars()
            if VAR_CALL not in variables:
                return 1  # not a dial-out of ours
            if event == "start":
                KSR.pv.sets(f"$dlg_var({VAR_ANSWERED_AT})", f"{time.time():.3f}")
                self.plugin.answered(call_id)
            elif event in ("end", "failed") and not variables.get(VAR_SETTLED):
                self._mark_settled()
                if event == "end":
                    self._ended(call_id, variables)
                else:
                    self._failed(call_id, variables)
        except Exception:
            self.log.exception("plugin_error", operation=f"dialog:{event}", call_id=call_id)
        return 1

    def _ended(self, call_id: str, variables: dict) -> None:
        if KSR.corex.is_faked_msg() > 0:
            # No BYE came in: a timeout whose route did not settle it (normally it has).
            self._timed_out(call_id, variables, CONFIRMED)
            return
        start_ts = int(KSR.pv.get("$dlg(start_ts)") or 0)
        answered_at = datetime.fromtimestamp(start_ts, UTC) if start_ts > 0 else None
        ended_by = "bridge" if KSR.rr.is_direction("downstream") > 0 else "trunk"
        self.plugin.settle(
            call_id,
            variables,
            outcome="allowed",
            bridge_status=200,
            trunk_status=200,
            ended_by=ended_by,
            answered_at=answered_at,
        )

    def _failed(self, call_id: str, variables: dict) -> None:
        outcome = variables.get(VAR_OUTCOME) or "trunk_failure"
        status = variables.get(VAR_STATUS)
        if status:
            status = int(status)
        elif KSR.corex.is_faked_msg() < 0 and KSR.siputils.is_reply() > 0:
            status = int(KSR.pv.get("$rs") or 0) or None
        else:
            status = None
        trunk_status = None if outcome == "trunk_timeout" else status
        self.plugin.settle(
            call_id,
            variables,
            outcome=outcome,
            bridge_status=status,
            trunk_status=trunk_status,
            ended_by=variables.get(VAR_ENDED_BY) or "trunk",
        )

    def _dialog_vars(self) -> dict:
        out = {}
        for name in OUR_VARS:
            value = KSR.pv.get(f"$dlg_var({name})")
            if value is not None:
                out[name] = value
        return out

    def _mark_settled(self) -> None:
        try:
            KSR.pv.sets(f"$dlg_var({VAR_SETTLED})", "1")
        except Exception:  # no dialog (dlg_manage itself failed): nothing else will settle it
            pass

    # --- rtimer ------------------------------------------------------------------------------

    def dialout_timer(self, msg, *args) -> int:
        try:
            request = {"jsonrpc": "2.0", "method": "dlg.profile_list", "params": [PROFILE], "id": 1}
            KSR.jsonrpcs.exec(json.dumps(request))
            dialogs = dialogs_from_rpc(KSR.pv.get("$jsonrpl(body)"))
            for update in self.plugin.tick(dialogs):
                if KSR.dialog.dlg_set_timeout_id(update.timeout_s, update.h_entry, update.h_id) < 0:
                    self.log.warning("dialog_timeout_not_set", call_id=update.call_id, timeout_s=update.timeout_s)
        except Exception:
            self.log.exception("plugin_error", operation="timer")
        return 1
