"""The gateway service: admission, decision, relay or reject, metering, logging.

One `GatewayService` per process. pjsua2 calls `GatewayAccount.onIncomingCall`
for every INVITE from the bridge; everything below runs on the SIP loop thread.

    INVITE -> admission (CIDR, draining, concurrency, rate)   -> 403 / 503
           -> sip.read_invite (headers, dialled number)       -> 484 on a broken URI
           -> store.snapshot + policy.decide                  -> 403 / 480 / 484 with reason headers
           -> store.open_call (reserve the first chunk)       -> 403 no_entitlement if the race is lost
           -> RelayedCall.relay to the trunk
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pjsua2 as pj

from gateway.admission import Admission, split_host_port
from gateway.legs import BridgeLeg
from gateway.logs import get_logger
from gateway.relay import RelayedCall
from policy import Bucket, CallRequest, Reason, Snapshot, decide, normalize_destination
from gateway.privacy import mask_number, mask_numbers_in
from sip import SipParseError, invite_from_request, parse_request, reject_headers, sanitize_text

UTC = timezone.utc


class GatewayAccount(pj.Account):
    """The one local account: UAS toward the bridge, UAC toward the trunk."""

    def __init__(self, service: GatewayService):
        super().__init__()
        self.service = service

    def onIncomingCall(self, prm):
        self.service.on_invite(self, prm)


class RateLimitedLog:
    """Events logged at most once per interval per (source, kind), with a count
    of what was suppressed, so that a flood cannot fill the disk."""

    def __init__(self, log, interval_s: float):
        self.log = log
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warning(self, event: str, source: str, kind: str, now: float, **fields) -> None:
        key = (source, kind)
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 50_000:
            self._last.clear()
        self._last[key] = (now, 0)
        self.log.warning(event, source=source, suppressed_since_last=suppressed, **fields)


class GatewayService:
    def __init__(self, *, stack, config, runtime, store, metrics=None):
        self.stack = stack
        self.config = config              # gateway.config.GatewayConfig (policy + raw sections)
        self.policy = config.policy       # policy.PolicySettings
        self.runtime = runtime            # gateway.settings.RuntimeSettings
        self.store = store
        self.metrics = metrics
        self.log = get_logger(component="gateway")
        self.admission = Admission(
            runtime.trusted_sources,
            max_concurrent_calls=runtime.max_concurrent_calls,
            max_calls_per_second=runtime.max_calls_per_second,
            require_tls=runtime.require_tls,
        )
        self.refusals = RateLimitedLog(self.log, runtime.logging.refusal_log_interval_s)
        self.calls: dict[int, RelayedCall] = {}          # pjsua call id of either leg -> call
        self.active = 0
        self.draining = False
        self.store_ok = True              # readiness: false while the ledger cannot be reached
        self.account: GatewayAccount | None = None
        self.trunk_host = runtime.trunk.uri.split(":", 1)[1]
        self.mask = runtime.logging.mask_numbers
        self._heartbeats = 0
        # Another instance's call is stale after missing several heartbeats and
        # outliving any ringing phase: its gateway is gone for good.
        self.stale_after_s = 5 * runtime.store.heartbeat_s + runtime.trunk.answer_timeout_s

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        cfg = pj.AccountConfig()
        # The Contact toward both sides; the trunk sees trunk.caller_id as From (per call).
        cfg.idUri = f"sip:dialout-gw@{self.runtime.gateway_host}"
        # No RTP sockets and no media work: the SDP passes through untouched.
        cfg.mediaConfig.useLoopMedTp = True
        # A relay must not renegotiate on its own: with codec locking on, pjsua
        # sends the trunk a re-INVITE narrowing a multi-codec answer to one
        # codec, an SDP the bridge never sees.
        cfg.mediaConfig.lockCodecEnabled = False
        cfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL
        cfg.callConfig.timerSessExpiresSec = self.runtime.session_expires_s
        cfg.callConfig.timerMinSESec = self.runtime.min_se_s
        self.account = GatewayAccount(self)
        self.account.create(cfg, True)
        self._schedule_heartbeat()
        self._check_store()

    def reload(self, config) -> None:
        """SIGHUP: swap directory and policy; calls in progress keep their decision."""
        self.config = config
        self.policy = config.policy
        self.log.info("config_reloaded", organizers=len(config.policy.organizers), tenants=len(config.policy.tenants))

    def begin_drain(self) -> None:
        self.draining = True
        self.log.info("draining", active_calls=self.active)

    def hangup_everything(self, text: str) -> None:
        for call in list({id(c): c for c in self.calls.values()}.values()):
            call.hangup_all(Reason.OVERLOADED, text)

    # --- the INVITE path ------------------------------------------------------------

    def on_invite(self, account, prm) -> None:
        received = time.monotonic()
        leg = BridgeLeg(account, None, prm.callId)
        rdata = prm.rdata
        raw = rdata.wholeMsg
        source, _ = split_host_port(rdata.srcAddress)
        call = RelayedCall(self, leg, sip_call_id="", log=self.log, received_at=received)
        leg.relay = call
        self.calls[prm.callId] = call
        # Decide once this callback has returned: inside onIncomingCall the
        # INVITE session is not set up yet, and pjsua would delay a rejection
        # and drop its Reason/Warning headers.
        self.stack.after_poll(lambda: self._decide_and_act(call, raw, source, received))

    def _decide_and_act(self, call: RelayedCall, raw: str, source: str, received: float) -> None:
        if not call.bridge.alive():
            return  # CANCELled or failed in between; on_state has the details
        try:
            self._handle_invite(call, raw, source, received)
        except Exception:
            self.log.exception("invite_failed", source=source)
            if call.bridge.alive() and call.bridge_status is None:
                call.reject(500, [], Reason.TRUNK_FAILURE)

    def _handle_invite(self, call: RelayedCall, raw: str, source: str, received: float) -> None:
        transport = _via_transport(raw)
        refusal = self.admission.check(source_host=source, transport=transport, active_calls=self.active,
                                       now=received, draining=self.draining)
        if refusal is not None:
            # Nothing about organisers or numbers goes into this answer or its log.
            call.admission_refused = True
            self.refusals.warning("admission_refused", source, refusal.reason.value, received,
                                  reason=refusal.reason.value, status=refusal.reason.status,
                                  explanation=refusal.sentence, transport=transport)
            if self.metrics:
                self.metrics.admission_refused(refusal.reason.value)
            call.reject(refusal.reason.status, self.reject_headers_for(refusal.reason, refusal.sentence, refusal.retry_after_s),
                        refusal.reason)
            return
        try:
            message = parse_request(raw)
            invite = invite_from_request(message, self.runtime.headers)
        except SipParseError as exc:
            # Broken SIP, not a decision: answer as RFC 3261 says (400, 416 or
            # 505) with a Warning; no policy reason code applies.
            self._reject_malformed(call, raw, source, exc.status, f"malformed request: {exc.reason}", received)
            return
        if not _accepts_sdp(message.headers_all("Accept")):
            self._reject_malformed(call, raw, source, 406,
                                   "the INVITE's Accept header excludes application/sdp", received)
            return
        call.invite = invite
        call.sip_call_id = invite.call_id
        call.source = source
        call.log = self.log.bind(call_id=invite.call_id)
        request = CallRequest(
            organizer=invite.organizer, dialled=invite.dialled, tenant=invite.tenant,
            initiator=invite.initiator, meeting=invite.meeting, location=invite.location,
        )
        now = datetime.now(UTC)
        decision_started = time.perf_counter()
        try:
            snapshot = self._snapshot(request, now)
        except Exception as exc:
            self._ledger_failed("snapshot", exc)
            self._reject_unmetered(call)
            return
        decision = decide(request, snapshot, now, self.policy)
        call.decision = decision
        call.explanation = decision.explanation
        if self.metrics:
            self.metrics.decision_seconds.observe(time.perf_counter() - decision_started)
        if not decision.allow:
            call.reject(decision.status,
                        self.reject_headers_for(decision.reason, decision.explanation, decision.retry_after_s),
                        decision.reason)
            return
        try:
            grant = self._open_ledger(call, decision, now)
        except Exception as exc:
            self._ledger_failed("open_call", exc)
            self._reject_unmetered(call)
            return
        if grant is None:
            call.explanation = "every entitlement was spent by calls in progress before this one could reserve"
            call.reject(Reason.NO_ENTITLEMENT.status,
                        self.reject_headers_for(Reason.NO_ENTITLEMENT, call.explanation), Reason.NO_ENTITLEMENT)
            return
        call.grant = grant
        target = f"sip:+{decision.e164.lstrip('+')}@{self.trunk_host};user=phone"
        try:
            call.relay(self.account, target, self.runtime.trunk.caller_id, invite.sdp,
                       self.runtime.trunk.answer_timeout_s)
        except pj.Error as exc:
            call.log.error("trunk_call_failed", error=exc.info())
            call.reason = Reason.TRUNK_FAILURE
            call.reject(503, self.reject_headers_for(Reason.TRUNK_FAILURE, "the gateway could not place the trunk call", 5),
                        Reason.TRUNK_FAILURE)

    def _snapshot(self, request: CallRequest, now: datetime) -> Snapshot:
        org = self.policy.organizer(request.organizer) if request.organizer else None
        if org is None:
            return Snapshot()
        number = normalize_destination(request.dialled, org.usage_location, self.policy.catalogue.number_validation)
        counters = self.store.snapshot(tenant=org.tenant.id, organizer=org.id,
                                       e164=number.e164 if number.ok else None, tz=org.tenant.timezone, now=now)
        spent = counters.pop("credits_spent", 0.0)
        return Snapshot(credits_balance=org.tenant.credits_balance - spent, **counters)

    def _open_ledger(self, call: RelayedCall, decision, now: datetime):
        from store import BucketSpec, CallOpen

        org = self.policy.organizer(decision.organizer)
        tenant = org.tenant
        cat = self.policy.catalogue
        chain = []
        for bucket, _seconds in decision.allowances:
            if bucket is Bucket.TENANT_POOL:
                chain.append(BucketSpec(bucket.value, tenant.pool_minutes))
            elif bucket is Bucket.CREDITS:
                chain.append(BucketSpec(bucket.value, tenant.credits_balance, decision.credit_rate_per_minute or 0.0))
            elif bucket is Bucket.PROMOTION:
                chain.append(BucketSpec(bucket.value, _promotion_cap(cat, tenant, decision.region, now)))
            else:
                chain.append(BucketSpec(bucket.value, None))
        grant = self.store.open_call(CallOpen(
            call_id=call.sip_call_id, tenant=tenant.id, organizer=org.id, e164=decision.e164,
            region=decision.region or "", tz=tenant.timezone, started_at=now, chain=tuple(chain),
            increment_s=decision.billing_increment_s or 60, max_duration_s=decision.max_duration_s,
        ))
        call.ledger_open = grant is not None
        return grant

    def _reject_malformed(self, call: RelayedCall, raw: str, source: str, status: int, detail: str,
                          now: float) -> None:
        call.admission_refused = True  # no decision was made: no call line, a rate-limited event
        call.sip_call_id = _call_id_of(raw)
        self.refusals.warning("invalid_request", source, str(status), now, status=status, explanation=detail,
                              call_id=call.sip_call_id)
        call.reject(status, [("Warning", f'399 {self.runtime.gateway_host} "{sanitize_text(detail)}"')], None)

    def _reject_unmetered(self, call: RelayedCall) -> None:
        """Fail closed: a call the ledger cannot meter is not placed."""
        call.explanation = "the usage ledger is unavailable, so the call was not placed (it could not be metered)"
        call.reject(503, self.reject_headers_for(Reason.OVERLOADED, call.explanation, 5), Reason.OVERLOADED)

    def _ledger_failed(self, operation: str, exc: Exception) -> None:
        self.store_ok = False
        self.log.error("ledger_write_failed", operation=operation, error=str(exc) or type(exc).__name__)
        if self.metrics:
            self.metrics.ledger_errors.inc()

    def _check_store(self) -> None:
        """Readiness probe of the ledger, every few seconds on the loop thread."""
        try:
            self.store.schema_version()
            self.store_ok = True
            if self.metrics:
                self._export_pool_usage()
        except Exception as exc:
            if self.store_ok:
                self.log.error("ledger_unreachable", error=str(exc) or type(exc).__name__)
            self.store_ok = False
        self.stack.call_later(5.0, self._check_store)

    def _export_pool_usage(self) -> None:
        from store.base import period_of

        now = datetime.now(UTC)
        for tenant in self.policy.tenants.values():
            row = self.store.bucket_row(tenant.id, period_of(now, tenant.timezone), "tenant_pool")
            used = (row["used"] + row["reserved"]) if row else 0.0
            self.metrics.pool_used.labels(tenant.id).set(used)
            self.metrics.pool_size.labels(tenant.id).set(tenant.pool_minutes)

    def reject_headers_for(self, reason: Reason, sentence: str, retry_after_s: int | None = None):
        if retry_after_s is None and reason.transient:
            retry_after_s = 1
        return reject_headers(reason.value, reason.status, sentence, self.runtime.gateway_host, retry_after_s)

    # --- events from RelayedCall --------------------------------------------------------

    def legs_opened(self, call: RelayedCall) -> None:
        self.calls[call.trunk.getId()] = call
        self.active += 1
        call.counted_active = True

    def call_answered(self, call: RelayedCall) -> None:
        call.answered_at = datetime.now(UTC)
        try:
            self.store.answered(call.sip_call_id, call.answered_at)
        except Exception as exc:
            # The call goes on; close_call carries the answer time again.
            self._ledger_failed("answered", exc)
        self._schedule_cut(call)

    def _schedule_cut(self, call: RelayedCall) -> None:
        """Cut at the authorised duration; extend the ledger grant chunk by chunk before then."""
        decision, grant = call.decision, call.grant
        elapsed = time.monotonic() - call.answered_mono
        limit = decision.max_duration_s
        granted = grant.granted_s
        if granted is not None and (limit is None or granted < limit):
            # Ask for the next chunk a little before this one runs out.
            margin = min(10.0, granted / 4)
            call.timers.append(self.stack.call_later(max(0.0, granted - margin - elapsed),
                                                     lambda: self._extend(call)))
            limit = granted
        if limit is not None:
            call.cut_timer = self.stack.call_later(max(0.0, limit - elapsed), lambda: self._cut(call))
            call.timers.append(call.cut_timer)

    def _extend(self, call: RelayedCall) -> None:
        if call.finished:
            return
        grant = self.store.extend(call.sip_call_id, datetime.now(UTC))
        if grant is None or grant.granted_s == call.grant.granted_s:
            return  # nothing more: the cut timer already set ends the call
        call.log.info("grant_extended", bucket=grant.bucket, granted_s=grant.granted_s)
        call.grant = grant
        call.cut_timer.cancel()
        self._schedule_cut(call)

    def _cut(self, call: RelayedCall) -> None:
        call.cut(Reason.DURATION_EXHAUSTED, "the authorised duration is used up")

    def call_finished(self, call: RelayedCall) -> None:
        ended_at = datetime.now(UTC)
        settlement = None
        if call.ledger_open:
            try:
                settlement = self.store.close_call(
                    call.sip_call_id, ended_at, str(call.reason or Reason.ALLOWED),
                    a_status=call.bridge_status, b_status=call.trunk_status, answered_at=call.answered_at)
            except Exception as exc:
                # The call stays open in the ledger; recovery settles it to its last heartbeat.
                self._ledger_failed("close_call", exc)
        if call.counted_active:
            self.active -= 1
        # Admission refusals have their own rate-limited event and counter.
        if not call.admission_refused:
            self._canonical_line(call, settlement, ended_at)
            if self.metrics:
                self.metrics.call_finished(call, settlement)
        ids = [call.bridge.getId()] + ([call.trunk.getId()] if call.trunk else [])

        def forget() -> None:
            for i in ids:
                self.calls.pop(i, None)
            call.release_legs()

        self.stack.after_poll(forget)

    # --- heartbeats --------------------------------------------------------------------

    def _schedule_heartbeat(self) -> None:
        self.stack.call_later(self.runtime.store.heartbeat_s, self._heartbeat)

    def _heartbeat(self) -> None:
        """Every heartbeat_s: mark our live calls alive, and settle the calls of
        another gateway that stopped heartbeating (it died and did not come back)."""
        now = datetime.now(UTC)
        live = {c.sip_call_id for c in self.calls.values() if c.ledger_open and not c.finished}
        try:
            if live:
                self.store.heartbeat(live, now)
            self._heartbeats += 1
            if self._heartbeats % 5 == 0:
                self.store.recover_open_calls(now, stale_after_s=self.stale_after_s, include_own=False)
                self.store.prune_counters(now)
        except Exception as exc:
            self._ledger_failed("heartbeat", exc)
        finally:
            self._schedule_heartbeat()

    # --- the canonical log line ---------------------------------------------------------

    def _canonical_line(self, call: RelayedCall, settlement, ended_at: datetime) -> None:
        d = call.decision
        inv = call.invite
        talk_s = round(time.monotonic() - call.answered_mono, 3) if call.answered_mono else 0.0
        reason = call.reason or (d.reason if d else Reason.TRUNK_FAILURE)
        fields = {
            "call_id": call.sip_call_id,
            "tenant": d.tenant if d else (inv.tenant if inv else None),
            "organizer": d.organizer if d and d.organizer else (inv.organizer if inv else None),
            "meeting": inv.meeting if inv else None,
            "initiator": inv.initiator if inv else None,
            "location": inv.location if inv else None,
            "dialled": (mask_number(inv.dialled) if self.mask else inv.dialled) if inv else None,
            "destination": (mask_number(d.e164) if self.mask else d.e164) if d and d.e164 else None,
            "region": d.region if d else None,
            "number_type": str(d.number_type) if d and d.number_type else None,
            "decision": "allow" if d and d.allow else "deny",
            "reason": str(reason),
            "bucket": str(d.bucket) if d and d.bucket else None,
            "fallback_buckets": [str(b) for b in d.fallback_buckets] if d else [],
            "max_duration_s": d.max_duration_s if d else None,
            "bridge_status": call.bridge_status,
            "trunk_status": call.trunk_status,
            "setup_ms": round(call.setup_ms, 2) if call.setup_ms is not None else None,
            "talk_s": talk_s,
            "billed_units": settlement.billed_units if settlement else 0,
            "charges": {b: amount for b, amount in settlement.charges} if settlement else {},
            "ended_by": call.ended_by,
            "explanation": mask_numbers_in(call.explanation) if self.mask else call.explanation,
        }
        if d is not None and not d.allow:
            fields["trace"] = [mask_numbers_in(c.detail) if self.mask else c.detail for c in d.trace]
        self.log.info("call", **fields)


def _promotion_cap(catalogue, tenant, region, now):
    """Pooled monthly minutes of the promotion that covers this call, None if uncapped."""
    day = now.astimezone(tenant.tz).date()
    for promo in catalogue.promotions:
        if promo.covers(day, region or ""):
            if promo.monthly_cap_minutes_per_user is None:
                return None
            return promo.monthly_cap_minutes_per_user * tenant.subscription_licences
    return None


def _accepts_sdp(accept_values: list[str]) -> bool:
    """RFC 3261 §21.4.7: without an Accept header, application/sdp is assumed."""
    if not accept_values:
        return True
    for value in accept_values:
        media = value.split(";", 1)[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*"):
            return True
    return False


def _via_transport(raw: str) -> str:
    """Transport of the top Via ("udp", "tcp", "tls"), from the raw INVITE."""
    for line in raw.split("\n", 12)[1:12]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("via", "v"):
            proto = value.strip().split(" ", 1)[0].upper()
            return proto.rsplit("/", 1)[-1].lower() if "/" in proto else "udp"
    return "udp"


def _call_id_of(raw: str) -> str:
    for line in raw.split("\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i"):
            return value.strip()
    return ""
