"""What the Kamailio plugin decides and records, without Kamailio.

`kemi.py` hands this module plain values (the INVITE as Kamailio received
it, the source address, a dialog's variables, the dialog list) and carries
out what comes back: a `Reject` to answer, a `Relay` to apply to the
request, dialog timeouts to move. Everything here runs in tests without a
proxy.

No policy of its own: the decision is `policy.assess` then
`policy.decide_assessed` on the ledger's `snapshot`, the reservation is
`store.open_call` built from `Decision.charges`, the rejection headers are
`sip.reject_headers`, and the INVITE is read by `sip.invite_from_request`:
the same calls, in the same order, as the gateway's
`GatewayService.on_invite` / `_admit_on_ledger` (gateway/service.py).

The ledger: every Kamailio process (the SIP workers, the timer process that
runs `tick`, the dialog module's timer) opens its own connection, lazily, in
the process that uses it (never before Kamailio forks). SQLite serialises
the processes' writes on the file (`BEGIN IMMEDIATE`); PostgreSQL takes one
connection per process.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from policy import CallRequest, Decision, Reason, Snapshot, assess, decide_assessed
from sip import SipParseError, invite_from_request, parse_request, reason_phrase, reject_headers, sanitize_text

UTC = UTC

# The dialog profile every admitted call joins (`profiles_no_value` in
# kamailio.cfg): `tick` lists the plugin's dialogs with `dlg.profile_list`.
PROFILE = "dialout"

# Dialog variables ($dlg_var) set on an admitted call. The first five are for
# the operator's own routing and for `kamcmd dlg.list`; `dialout_call` carries
# the canonical line's fields to the process that settles the call.
VAR_REASON = "dialout_reason"  # the decision's reason code: "allowed"
VAR_BUCKET = "dialout_bucket"  # the bucket that pays first
VAR_MAX_S = "dialout_max_s"  # the authorised duration, seconds
VAR_GRANTED_S = "dialout_granted_s"  # talk seconds reserved at admission ("" = unlimited)
VAR_TRUNK = "dialout_trunk"  # host[:port] the call was relayed to
VAR_CALL = "dialout_call"  # JSON: the call's decision, for the canonical line
# Set later, by the failure route and by settlement.
VAR_OUTCOME = "dialout_outcome"  # trunk_failure / trunk_timeout / allowed (cancelled)
VAR_STATUS = "dialout_status"  # the final status the bridge got
VAR_ENDED_BY = "dialout_ended_by"
VAR_SETTLED = "dialout_settled"  # "1" once the ledger has the call closed
VAR_ANSWERED_AT = "dialout_answered_at"  # epoch seconds of the 2xx (dialog:start), for setup_ms

# Kamailio dialog states (dialog module README, "Dialog states").
CONFIRMED_NO_ACK, CONFIRMED = 3, 4

# The timer runs once a second; a grant is extended this long before it runs
# out at the latest (the gateway's own margin, min(10 s, a quarter of the
# grant), would be shorter than one tick for short chunks).
MIN_EXTEND_MARGIN_S = 2.0


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the INVITE with `status`; `headers` go into the reply (append_to_reply)."""

    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...]
    reason: str
    stateless: bool = False  # untrusted sources get one stateless answer, no transaction


@dataclass(frozen=True, slots=True)
class Relay:
    """Let the call through: the new Request-URI, the dialog's limit and variables."""

    call_id: str
    target: str  # sip:+E164@trunk;user=phone
    timeout_s: int | None  # dialog lifetime from the answer: first grant within the maximum
    answer_timeout_ms: int  # tm fr/fr_inv timers: no final answer from the trunk by then -> 408
    remove_headers: tuple[str, ...]  # the bridge's X-Dialout-* headers, not for the trunk
    dialog_vars: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class DialogView:
    """One of the plugin's dialogs as `dlg.profile_list` shows it."""

    h_entry: int
    h_id: int
    call_id: str
    state: int
    start_ts: int  # the answer (2xx), epoch seconds; 0 before
    timeout_ts: int  # when the dialog module ends it, epoch seconds
    variables: Mapping[str, str]

    @property
    def answered(self) -> bool:
        return self.start_ts > 0 and self.state in (CONFIRMED_NO_ACK, CONFIRMED)


@dataclass(frozen=True, slots=True)
class TimeoutUpdate:
    """Move the dialog's end to `timeout_s` from now (dlg_set_timeout_id)."""

    h_entry: int
    h_id: int
    timeout_s: int
    call_id: str


def dialogs_from_rpc(body: str | None) -> list[DialogView]:
    """Parse the JSON-RPC answer of `dlg.profile_list` (jsonrpcs), tolerating an empty profile."""
    if not body:
        return []
    doc = json.loads(body)
    if "error" in doc:
        # An empty profile is an error for some versions ("no dialogs"): nothing to do.
        return []
    out = []
    for item in doc.get("result") or ():
        variables: dict[str, str] = {}
        for entry in item.get("variables") or ():
            variables.update({str(k): str(v) for k, v in entry.items()})
        out.append(
            DialogView(
                h_entry=int(item["h_entry"]),
                h_id=int(item["h_id"]),
                call_id=str(item["call-id"]),
                state=int(item.get("state") or 0),
                start_ts=int(item.get("start_ts") or 0),
                timeout_ts=int(item.get("timeout") or 0),
                variables=variables,
            )
        )
    return out


class Ledger:
    """The store of the current process, opened on first use after Kamailio forked."""

    def __init__(self, store_settings, log, *, instance_suffix: str = "") -> None:
        self.settings = store_settings
        self.log = log
        self.instance_suffix = instance_suffix
        self._store = None
        self._pid = 0

    @property
    def instance_id(self) -> str:
        return self.settings.instance_id + self.instance_suffix

    def get(self):
        pid = os.getpid()
        if self._store is None or self._pid != pid:
            # A connection inherited through fork() is never used: another process owns it.
            from store import open_store

            s = self.settings
            self._store = open_store(
                s.url,
                instance_id=self.instance_id,
                chunk_s=s.chunk_s,
                log=self.log,
                credits_floor=s.credits_floor,
                alert_webhook=s.alert_webhook,
            )
            self._pid = pid
        return self._store

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None
        self._pid = 0


class DialoutPlugin:
    """The decision, the reservation and the settlement of calls Kamailio proxies."""

    def __init__(self, settings, log) -> None:
        self.settings = settings
        self.runtime = settings.runtime
        self.policy = settings.policy
        self.log = log
        self.ledger = Ledger(self.runtime.store, log.bind(component="store"))
        # The timer process's own view: grants it extended, calls whose entitlement ran dry.
        self._granted: dict[str, int | None] = {}
        self._exhausted: set[str] = set()
        self._last_heartbeat = 0.0
        self._heartbeats = 0
        self._sweeper: Ledger | None = None
        self.stale_after_s = 5 * self.runtime.store.heartbeat_s + self.runtime.trunk.answer_timeout_s
        self._refusals: dict[tuple[str, str], float] = {}

    # --- start-up (Kamailio's main process, before it forks) -------------------------------

    def start(self, now: datetime | None = None) -> int:
        """Migrate the ledger and settle this instance's calls a previous run left
        open (charged up to their last heartbeat). Returns how many were recovered.
        The connection is closed afterwards: the SIP workers open their own."""
        now = now or datetime.now(UTC)
        store = self.ledger.get()
        try:
            version = store.migrate()
            recovered = store.recover_open_calls(now)
        finally:
            self.ledger.close()
        self.log.info(
            "kamailio_plugin_started",
            schema_version=version,
            recovered_calls=len(recovered),
            instance_id=self.ledger.instance_id,
            trunk=self.settings.trunk_host,
        )
        return len(recovered)

    def imported_directory(self) -> tuple[list[dict], list[dict]]:
        store = self.ledger.get()
        try:
            return store.directory_rows()
        finally:
            self.ledger.close()

    # --- the initial INVITE -------------------------------------------------------------

    def admit(self, raw: str | bytes | None, source: str, now: datetime | None = None) -> Reject | Relay | None:
        """Rules 1-9 and the reservation for one initial INVITE.

        None: drop it (an untrusted source with `gateway.untrusted = "drop"`).
        """
        rt = self.runtime
        received = time.time()
        if not self.is_trusted(source):
            self._refused(
                source, "untrusted_source", explanation="the request did not come from a trusted bridge address"
            )
            if rt.untrusted != "reject":
                return None
            # As the gateway: the reason only, nothing about organisers, numbers or us.
            return Reject(
                403,
                "Forbidden",
                (("Reason", 'SIP;cause=403;text="untrusted_source"'),),
                Reason.UNTRUSTED_SOURCE.value,
                stateless=True,
            )
        now = now or datetime.now(UTC)
        try:
            if raw is None:
                raise SipParseError("the request could not be read")
            if isinstance(raw, bytes):
                raw.partition(b"\r\n\r\n")[0].decode("utf-8")
            message = parse_request(raw)
            invite = invite_from_request(message, rt.headers)
        except UnicodeDecodeError:
            return self._malformed(source, 400, "the request's headers are not valid UTF-8")
        except SipParseError as exc:
            return self._malformed(source, exc.status, f"malformed request: {exc.reason}")

        request = CallRequest(
            organizer=invite.organizer,
            dialled=invite.dialled,
            tenant=invite.tenant,
            initiator=invite.initiator,
            meeting=invite.meeting,
            location=invite.location,
        )
        assessed = assess(request, now, self.policy)
        if isinstance(assessed, Decision):  # rules 2-6: no ledger needed
            return self._deny(invite, assessed, received)
        try:
            decision, grant = self._reserve(assessed, now, invite.call_id)
        except Exception as exc:  # the ledger: StoreError, a driver error, a lost connection
            self.log.error(
                "ledger_write_failed", operation="admit", call_id=invite.call_id, error=str(exc) or type(exc).__name__
            )
            return self._deny_reason(
                invite,
                received,
                Reason.OVERLOADED,
                "the usage ledger is unavailable, so the call was not placed (it could not be metered)",
                retry_after_s=5,
            )
        if not decision.allow:
            return self._deny(invite, decision, received)
        if grant is None:
            return self._deny_reason(
                invite,
                received,
                Reason.NO_ENTITLEMENT,
                "every entitlement was spent by calls in progress before this one could reserve",
                decision=decision,
            )
        return self._relay(message, invite, decision, grant, received)

    def _reserve(self, assessed, now: datetime, call_id: str):
        """Counters, rules 7-9 and the reservation: gateway/service.py `_admit_on_ledger`."""
        from store import BucketSpec, CallOpen

        store = self.ledger.get()
        counters = store.snapshot(
            tenant=assessed.tenant_id, organizer=assessed.organizer_id, e164=assessed.e164, tz=assessed.tz, now=now
        )
        spent = counters.pop("credits_spent", 0.0)
        snapshot = Snapshot(credits_balance=assessed.organizer.tenant.credits_balance - spent, **counters)
        decision = decide_assessed(assessed, snapshot, now, self.policy)
        if not decision.allow:
            return decision, None
        chain = tuple(BucketSpec(c.bucket.value, c.cap_minutes, c.rate_per_minute) for c in decision.charges)
        grant = store.open_call(
            CallOpen(
                call_id=call_id,
                tenant=decision.tenant,
                organizer=decision.organizer,
                e164=decision.e164,
                region=decision.region or "",
                tz=decision.tz or "UTC",
                started_at=now,
                chain=chain,
                increment_s=decision.billing_increment_s or 60,
                max_duration_s=decision.max_duration_s,
            )
        )
        return decision, grant

    def _relay(self, message, invite, decision: Decision, grant, received: float) -> Relay:
        number = decision.e164.lstrip("+")
        trunk = self.settings.trunk_host
        limits = [s for s in (grant.granted_s, decision.max_duration_s) if s is not None]
        names = {
            n.lower()
            for n in (
                self.runtime.headers.organizer,
                self.runtime.headers.tenant,
                self.runtime.headers.meeting,
                self.runtime.headers.initiator,
                self.runtime.headers.location,
            )
        }
        remove = []
        for name, _ in message.headers:
            low = name.lower()
            if (low in names or low.startswith("x-dialout-")) and name not in remove:
                remove.append(name)
        call = _call_fields(invite, decision)
        call["trunk"] = trunk.split(";", 1)[0]
        call["received_at"] = round(received, 3)
        variables = (
            (VAR_REASON, decision.reason.value),
            (VAR_BUCKET, decision.bucket.value if decision.bucket else ""),
            (VAR_MAX_S, "" if decision.max_duration_s is None else str(decision.max_duration_s)),
            (VAR_GRANTED_S, "" if grant.granted_s is None else str(grant.granted_s)),
            (VAR_TRUNK, trunk.split(";", 1)[0]),
            (VAR_CALL, json.dumps(call, separators=(",", ":"))),
        )
        return Relay(
            call_id=invite.call_id,
            target=f"sip:+{number}@{trunk};user=phone",
            timeout_s=min(limits) if limits else None,
            answer_timeout_ms=int(self.runtime.trunk.answer_timeout_s * 1000),
            remove_headers=tuple(remove),
            dialog_vars=variables,
        )

    def _deny(self, invite, decision: Decision, received: float) -> Reject:
        reject = self.reject(decision.reason, decision.explanation, decision.retry_after_s)
        self._line(
            _call_fields(invite, decision),
            call_id=invite.call_id,
            decision="deny",
            reason=decision.reason.value,
            bridge_status=reject.status,
            trunk_status=None,
            explanation=decision.explanation,
            trace=[c.detail for c in decision.trace],
            setup_ms=(time.time() - received) * 1000,
        )
        return reject

    def _deny_reason(
        self,
        invite,
        received: float,
        reason: Reason,
        text: str,
        retry_after_s: int | None = None,
        decision: Decision | None = None,
    ) -> Reject:
        reject = self.reject(reason, text, retry_after_s)
        fields = _call_fields(invite, decision)
        self._line(
            fields,
            call_id=invite.call_id,
            decision="deny",
            reason=reason.value,
            bridge_status=reject.status,
            trunk_status=None,
            explanation=text,
            setup_ms=(time.time() - received) * 1000,
        )
        return reject

    def reject(self, reason: Reason, sentence: str, retry_after_s: int | None = None) -> Reject:
        """The gateway's `reject_headers_for`: transient reasons carry Retry-After (1 s by default)."""
        if retry_after_s is None and reason.transient:
            retry_after_s = 1
        headers = reject_headers(reason.value, reason.status, sentence, self.runtime.gateway_host, retry_after_s)
        return Reject(reason.status, reason_phrase(reason.status), tuple(headers), reason.value)

    def _malformed(self, source: str, status: int, detail: str) -> Reject:
        self._refused(source, f"invalid_request:{status}", event="invalid_request", status=status, explanation=detail)
        warning = ("Warning", f'399 {self.runtime.gateway_host} "{sanitize_text(detail)}"')
        return Reject(status, reason_phrase(status), (warning,), "invalid_request")

    def is_trusted(self, source: str) -> bool:
        """Rule 1: the source address is in `gateway.trusted_sources`."""
        import ipaddress

        try:
            address = ipaddress.ip_address(source.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.runtime.trusted_sources if net.version == address.version)

    def _refused(self, source: str, kind: str, *, event: str = "admission_refused", **fields) -> None:
        """Refusals before any decision, logged at most once per interval per source and kind."""
        now = time.monotonic()
        key = (source, kind)
        if now - self._refusals.get(key, float("-inf")) < self.runtime.logging.refusal_log_interval_s:
            return
        if len(self._refusals) > 50_000:
            self._refusals.clear()
        self._refusals[key] = now
        if event == "admission_refused":
            fields.setdefault("reason", kind)
        self.log.warning(event, source=source, **fields)

    # --- after the relay ----------------------------------------------------------------

    def answered(self, call_id: str, at: datetime | None = None) -> None:
        """dialog:start, the trunk's 2xx: talk time starts. A failure is logged: the
        settlement carries the answer time again (close_call(answered_at=...))."""
        try:
            self.ledger.get().answered(call_id, at or datetime.now(UTC))
        except Exception as exc:
            self.log.error(
                "ledger_write_failed", operation="answered", call_id=call_id, error=str(exc) or type(exc).__name__
            )

    def settle(
        self,
        call_id: str,
        variables: Mapping[str, str],
        *,
        outcome: str,
        bridge_status: int | None,
        trunk_status: int | None,
        ended_by: str | None,
        answered_at: datetime | None = None,
        ended_at: datetime | None = None,
    ):
        """Close the call in the ledger (idempotent per Call-ID) and write its canonical line.

        Returns the Settlement, or None when the ledger could not be written: the
        call then stays open there, no longer heartbeated, and the timer's sweep
        settles it to its last sign of life (as after a crash).
        """
        ended_at = ended_at or datetime.now(UTC)
        try:
            settlement = self.ledger.get().close_call(
                call_id, ended_at, outcome, a_status=bridge_status, b_status=trunk_status, answered_at=answered_at
            )
        except Exception as exc:
            self.log.error(
                "ledger_write_failed", operation="close_call", call_id=call_id, error=str(exc) or type(exc).__name__
            )
            settlement = None
        try:
            fields = json.loads(variables.get(VAR_CALL) or "{}")
        except ValueError:
            fields = {}
        # Setup time as the gateway counts it: INVITE in, to the bridge's final answer.
        setup_ms = None
        if fields.get("received_at"):
            answered = _float_or_none(variables.get(VAR_ANSWERED_AT))
            final = answered if answered is not None else (None if bridge_status == 200 else ended_at.timestamp())
            if final is not None:
                setup_ms = max(0.0, (final - fields["received_at"]) * 1000)
        self._line(
            fields,
            call_id=call_id,
            decision="allow",
            reason=outcome,
            bridge_status=bridge_status,
            trunk_status=trunk_status,
            ended_by=ended_by,
            settlement=settlement,
            setup_ms=setup_ms,
        )
        return settlement

    # --- the timer process: grants, heartbeats, the sweep ----------------------------------

    def tick(self, dialogs: Iterable[DialogView], now_ts: float | None = None) -> list[TimeoutUpdate]:
        """Once a second: extend grants about to run out, heartbeat live calls, and
        every few heartbeats settle calls nobody heartbeats any more.

        Returns the dialog timeouts to move (after an extension).
        """
        now_ts = time.time() if now_ts is None else now_ts
        now = datetime.fromtimestamp(now_ts, UTC)
        ours = [d for d in dialogs if VAR_CALL in d.variables]
        updates: list[TimeoutUpdate] = []
        for d in ours:
            if d.answered:
                update = self._maybe_extend(d, now, now_ts)
                if update is not None:
                    updates.append(update)
        live = {d.call_id for d in ours}
        for gone in set(self._granted) - live:
            del self._granted[gone]
        self._exhausted &= live

        # Half a tick of slack: a tick that comes a little early still beats.
        if now_ts - self._last_heartbeat >= max(0.5, self.runtime.store.heartbeat_s - 0.5):
            self._last_heartbeat = now_ts
            self._heartbeats += 1
            self._heartbeat(sorted(live), now)
        return updates

    def _maybe_extend(self, d: DialogView, now: datetime, now_ts: float) -> TimeoutUpdate | None:
        max_s = _int_or_none(d.variables.get(VAR_MAX_S))
        if d.call_id in self._granted:
            granted = self._granted[d.call_id]
        else:
            # First sight: the grant made at admission, or more if a previous timer
            # process (before an app_python.reload) extended it: the dialog's end says.
            granted = _int_or_none(d.variables.get(VAR_GRANTED_S))
            if granted is not None and d.timeout_ts > d.start_ts:
                granted = max(granted, d.timeout_ts - d.start_ts)
            self._granted[d.call_id] = granted
        if granted is None or (max_s is not None and granted >= max_s) or d.call_id in self._exhausted:
            return None
        elapsed = now_ts - d.start_ts
        margin = min(10.0, max(MIN_EXTEND_MARGIN_S, granted / 4))
        if elapsed < granted - margin:
            return None
        try:
            grant = self.ledger.get().extend(d.call_id, now)
        except Exception as exc:
            self.log.error(
                "ledger_write_failed", operation="extend", call_id=d.call_id, error=str(exc) or type(exc).__name__
            )
            return None  # tried again next second; the dialog ends at the grant meanwhile
        if grant is None:
            self._exhausted.add(d.call_id)
            self.log.info("grant_exhausted", call_id=d.call_id, granted_s=granted, max_duration_s=max_s)
            return None
        new = grant.granted_s if grant.granted_s is not None else max_s
        if new is None:
            return None
        if max_s is not None:
            new = min(new, max_s)
        self._granted[d.call_id] = grant.granted_s if grant.granted_s is not None else max_s
        if new <= granted:
            return None
        self.log.info("grant_extended", call_id=d.call_id, bucket=grant.bucket, granted_s=new)
        return TimeoutUpdate(d.h_entry, d.h_id, max(1, math.ceil(d.start_ts + new - now_ts)), d.call_id)

    def _heartbeat(self, live: list[str], now: datetime) -> None:
        try:
            store = self.ledger.get()
            if live:
                store.heartbeat(live, now)
            if self._heartbeats % 5 == 0:
                store.prune_counters(now)
        except Exception as exc:
            self.log.error("ledger_write_failed", operation="heartbeat", error=str(exc) or type(exc).__name__)
            return
        if self._heartbeats % 5 == 0:
            self._sweep(now)

    def _sweep(self, now: datetime) -> None:
        """Settle every call, ours included, that no process has heartbeated for
        `stale_after_s`: its settlement was lost (the ledger failed at the end of
        the call) or its Kamailio died for good. Our own live calls were just
        heartbeated, so they are never stale.

        `recover_open_calls` leaves the caller's own instance alone while it
        runs (`include_own=False`); the sweep therefore runs under an instance
        id of its own, so that this Kamailio's lost calls are found too.
        """
        if self._sweeper is None:
            self._sweeper = Ledger(self.runtime.store, self.ledger.log, instance_suffix="/sweep")
        try:
            self._sweeper.get().recover_open_calls(now, stale_after_s=self.stale_after_s, include_own=False)
        except Exception as exc:
            self.log.error("ledger_write_failed", operation="sweep", error=str(exc) or type(exc).__name__)

    # --- the canonical line ---------------------------------------------------------------

    def _line(
        self,
        fields: Mapping,
        *,
        call_id: str,
        decision: str,
        reason: str,
        bridge_status: int | None,
        trunk_status: int | None,
        ended_by: str | None = None,
        explanation: str | None = None,
        trace=None,
        settlement=None,
        setup_ms: float | None = None,
    ) -> None:
        line = {
            "call_id": call_id,
            "tenant": fields.get("tenant"),
            "organizer": fields.get("organizer"),
            "meeting": fields.get("meeting"),
            "initiator": fields.get("initiator"),
            "location": fields.get("location"),
            "dialled": fields.get("dialled"),
            "destination": fields.get("destination"),
            "region": fields.get("region"),
            "number_type": fields.get("number_type"),
            "decision": decision,
            "reason": reason,
            "bucket": fields.get("bucket"),
            "fallback_buckets": fields.get("fallback_buckets") or [],
            "max_duration_s": fields.get("max_duration_s"),
            "bridge_status": bridge_status,
            "trunk_status": trunk_status,
            "trunk": fields.get("trunk"),
            "setup_ms": round(setup_ms, 2) if setup_ms is not None else None,
            "talk_s": round(settlement.talk_s, 3) if settlement else 0.0,
            "billed_units": settlement.billed_units if settlement else 0,
            "charges": {b: a for b, a in settlement.charges} if settlement else {},
            "ended_by": ended_by,
            "explanation": explanation or fields.get("explanation"),
        }
        if trace is not None:
            line["trace"] = trace
        self.log.info("call", **line)


def _call_fields(invite, decision: Decision | None) -> dict:
    """What the canonical line says about the request and its decision."""
    d = decision
    return {
        "tenant": d.tenant if d and d.tenant else invite.tenant,
        "organizer": d.organizer if d and d.organizer else invite.organizer,
        "meeting": invite.meeting,
        "initiator": invite.initiator,
        "location": invite.location,
        "dialled": invite.dialled,
        "destination": d.e164 if d and d.e164 else None,
        "region": d.region if d else None,
        "number_type": str(d.number_type) if d and d.number_type else None,
        "bucket": str(d.bucket) if d and d.bucket else None,
        "fallback_buckets": [str(b) for b in d.fallback_buckets] if d else [],
        "max_duration_s": d.max_duration_s if d else None,
        "explanation": d.explanation if d else None,
    }


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int_or_none(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
