"""The gateway service: admission, decision, metering and the canonical line.

One `GatewayService` per process, on the SIP loop thread. For each INVITE the
SIP engine reports (gateway.engine):

    INVITE -> admission (draining, concurrency, rate)       -> 503 + Retry-After
           -> the message read at the edge (UTF-8, RFC 3261) -> 400/416/505/406/420/422/483, 488 sdp_invalid
           -> policy.assess (rules 2-6, no I/O)              -> 403/484 with reason headers, at once
           -> on the ledger writer: counters, rules 7-9, the reservation
                                                             -> 403/480 with reason headers, or 503 if the
                                                                ledger cannot answer in time
           -> the call's state machine relays it (call.machine)

Trusted sources and TLS are checked below, in the engine (csrc/), before any
work: an INVITE from elsewhere gets one stateless 403 or nothing.

(Over 400 lines on purpose: it is the one place where a call's admission,
its ledger jobs and their deadlines meet, so that "every call ends exactly
once, in the ledger and in the metrics" can be checked by reading one class.
What is not about that moved out: the edge checks to gateway/edge.py, the
canonical line to gateway/canonical.py, trunk state to gateway/trunks.py.)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from call import events as E
from call.actions import CallRecord
from call.events import Body, RelayPlan
from call.machine import Call
from gateway import _sipcore as sc
from gateway.admission import Admission
from gateway.canonical import canonical_fields
from gateway.edge import Malformed, RateLimitedLog, body_bytes, read_invite
from gateway.engine import CallHandle, Engine
from gateway.logs import get_logger
from gateway.trunks import TrunkSide
from policy import CallRequest, Decision, Reason, Snapshot, assess, decide_assessed
from policy.routing import route
from sip import reject_headers, sanitize_text
from sip.headers import encode_block
from sip.sdp import check_sdp

UTC = UTC


class GatewayService:
    def __init__(self, *, stack, config, runtime, ledger, metrics=None):
        self.stack = stack
        self.config = config  # gateway.config.GatewayConfig (policy + raw sections)
        self.policy = config.policy  # policy.PolicySettings
        self.runtime = runtime  # gateway.settings.RuntimeSettings
        self.ledger = ledger  # submit(op, on_done) on the ledger writer
        self.metrics = metrics
        self.log = get_logger(component="gateway")
        self.admission = Admission(
            max_concurrent_calls=runtime.max_concurrent_calls, max_calls_per_second=runtime.max_calls_per_second
        )
        self.refusals = RateLimitedLog(self.log, runtime.logging.refusal_log_interval_s)
        self.engine = Engine(self, stack)
        self.active = 0  # calls from their INVITE to their Finish
        self.draining = False
        self.store_ok = True  # readiness: false while the ledger cannot be reached
        self.trunks = TrunkSide(stack=stack, runtime=runtime, metrics=metrics, log=self.log)
        self._heartbeats = 0
        # Another instance's call is stale after missing several heartbeats and
        # outliving any ringing phase: its gateway is gone for good.
        self.stale_after_s = 5 * runtime.store.heartbeat_s + runtime.trunk.answer_timeout_s

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.stack.start(self.engine.on_event)
        trusted = []
        for net in self.runtime.trusted_sources:
            trusted.append((net.version, net.network_address.packed, net.prefixlen))
        sc.configure(
            trusted=trusted,
            untrusted=self.runtime.untrusted,
            require_tls=self.runtime.require_tls,
            server=self.runtime.server_header or None,
            user_agent=self.runtime.server_header or None,
        )
        t1 = self.runtime.t1_ms
        sc.set_timers(t1, max(t1, 4000), 5000)
        self.stack.call_later(self.runtime.store.heartbeat_s, self._heartbeat)
        self._check_store()
        self.trunks.start({transport: self._contact_for(transport) for transport in ("udp", "tcp", "tls")})

    def _contact_for(self, transport: str) -> str:
        """Our Contact toward a trunk reached over `transport`: that listener's address."""
        for tid, listener in zip(self.stack.transport_ids, self.runtime.listeners):
            if listener.transport == transport:
                name = self.stack.endpoint.transportGetInfo(tid).localName
                suffix = "" if transport == "udp" else f";transport={transport}"
                return f"<sip:gw@{name}{suffix}>"
        listener = self.runtime.listeners[0]
        return f"<sip:gw@{self.runtime.gateway_host}:{listener.port}>"

    def reload(self, config) -> None:
        """SIGHUP: swap directory and policy; calls in progress keep their decision."""
        self.config = config
        self.policy = config.policy
        self.log.info("config_reloaded", organizers=len(config.policy.organizers), tenants=len(config.policy.tenants))

    def begin_drain(self) -> None:
        self.draining = True
        self.log.info("draining", active_calls=self.active)

    def stop(self) -> None:
        """Before the stack goes: end carrier registrations."""
        self.trunks.stop()

    def hangup_everything(self, text: str) -> None:
        for handle in self.engine.calls():
            self.engine.feed(handle, E.Shutdown(text))

    # --- the INVITE path ------------------------------------------------------------

    def on_invite(self, leg: int, raw: bytes, source: str, port: int, transport: str) -> None:
        received = time.monotonic()
        refusal = self.admission.check(active_calls=self.active, now=received, draining=self.draining)
        if refusal is not None:
            # Nothing about organisers or numbers goes into this answer or its log.
            self.refusals.warning(
                "admission_refused",
                source,
                refusal.reason.value,
                received,
                reason=refusal.reason.value,
                status=refusal.reason.status,
                explanation=refusal.sentence,
                transport=transport,
            )
            if self.metrics:
                self.metrics.admission_refused(refusal.reason.value)
            self._answer(
                leg,
                refusal.reason.status,
                self.reject_headers_for(refusal.reason, refusal.sentence, refusal.retry_after_s),
            )
            return
        try:
            message, invite = read_invite(raw, self.runtime.headers, self.runtime.min_se_s, self.log)
        except Malformed as bad:
            self.refusals.warning(
                "invalid_request",
                source,
                str(bad.status),
                received,
                status=bad.status,
                explanation=bad.detail,
                call_id=bad.call_id,
                transport=transport,
            )
            headers = [("Warning", f'399 {self.runtime.gateway_host} "{sanitize_text(bad.detail)}"')]
            headers += bad.headers
            self._answer(leg, bad.status, headers)
            return

        offer = Body(message.header("content-type") or "application/sdp", body_bytes(raw)) if invite.sdp else None
        supported = {t.strip().lower() for v in message.headers_all("supported") for t in v.split(",")}
        allow = frozenset(t.strip().upper() for v in message.headers_all("allow") for t in v.split(",") if t.strip())
        machine = Call(
            received_at=received,
            offer=offer,
            bridge_timer="timer" in supported,
            check_sdp=check_sdp,
            bridge_allow=allow or None,
        )
        handle = CallHandle(machine, leg, invite.call_id, self.log.bind(call_id=invite.call_id))
        handle.invite = invite
        handle.source = source
        handle.received_wall = datetime.now(UTC)
        self.engine.register(handle)
        self.active += 1
        handle.counted = True

        request = CallRequest(
            organizer=invite.organizer,
            dialled=invite.dialled,
            tenant=invite.tenant,
            initiator=invite.initiator,
            meeting=invite.meeting,
            location=invite.location,
        )
        handle.request = request
        started = time.perf_counter()
        assessed = assess(request, handle.received_wall, self.policy)
        if isinstance(assessed, Decision):  # denied by rules 2-6: no ledger needed
            handle.decision = assessed
            self._observe_decision(started)
            self._feed_decision(handle, assessed)
            return
        handle.assessment = assessed
        # After rules 2-6 (a denial needs no look at the SDP) and before any
        # reservation: an offer that cannot be relayed safely goes no further.
        problem = check_sdp(offer) if offer else None
        if problem:
            self._deny(handle, Reason.SDP_INVALID, f"the bridge's SDP offer cannot be relayed safely: {problem}")
            return
        if self.ledger.oldest_pending_age_s() > self.runtime.store.timeout_s:
            self._deny(
                handle,
                Reason.OVERLOADED,
                "the usage ledger is not answering, so the call was not placed (it could not be metered)",
                retry_after_s=5,
            )
            return
        self._admit_on_ledger(handle, assessed, started, message, invite)

    def _admit_on_ledger(self, handle: CallHandle, assessed, started: float, message, invite) -> None:
        """Counters, rules 7-9 and the reservation, in one job on the ledger writer."""
        policy = self.policy
        now = handle.received_wall
        call_id = invite.call_id

        trunks, down = self.runtime.trunks, self.trunks.down
        turn = self.trunks.next_turn()

        def admit(store):
            counters = store.snapshot(
                tenant=assessed.tenant_id, organizer=assessed.organizer_id, e164=assessed.e164, tz=assessed.tz, now=now
            )
            spent = counters.pop("credits_spent", 0.0)
            snapshot = Snapshot(credits_balance=assessed.organizer.tenant.credits_balance - spent, **counters)
            decision = decide_assessed(assessed, snapshot, now, policy)
            if not decision.allow:
                return decision, None, ()
            # Routing: after the policy allowed the call, before any reservation.
            routes = route(decision.e164, decision.region, trunks, down=down, turn=turn)
            if not routes:
                return decision, None, ()
            from store import BucketSpec, CallOpen

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
            return decision, grant, routes

        def done(result) -> None:
            if handle.job_deadline is not None:
                handle.job_deadline.cancel()
                handle.job_deadline = None
            if isinstance(result, Exception):
                self._ledger_failed("admit", result)
                if handle.machine.state.value == "deciding":
                    self._deny(
                        handle,
                        Reason.OVERLOADED,
                        "the usage ledger is unavailable, so the call was not placed (it could not be metered)",
                        retry_after_s=5,
                    )
                return
            self.store_ok = True
            decision, grant, routes = result
            handle.decision = decision
            self._observe_decision(started)
            if handle.machine.state.value != "deciding":
                # Too late: the bridge already had its answer (ledger deadline). Release it.
                if grant is not None:
                    self._release(handle)
                return
            if not decision.allow:
                self._feed_decision(handle, decision)
                return
            if not routes:
                self._deny(
                    handle,
                    Reason.NO_ROUTE,
                    f"the policy allows {decision.e164} ({decision.region}), "
                    "but no configured trunk serves that destination",
                )
                return
            if grant is None:
                text = "every entitlement was spent by calls in progress before this one could reserve"
                self._deny(handle, Reason.NO_ENTITLEMENT, text)
                return
            handle.grant = grant
            self.engine.feed(handle, E.Admitted(self._plan(handle, decision, grant, routes, message, invite)))

        def too_slow() -> None:
            handle.job_deadline = None
            if handle.machine.state.value == "deciding":
                self.store_ok = False
                self._deny(
                    handle,
                    Reason.OVERLOADED,
                    "the usage ledger did not answer in time, so the call was not placed (it could not be metered)",
                    retry_after_s=5,
                )

        handle.job_deadline = self.stack.call_later(self.runtime.store.timeout_s, too_slow)
        self.ledger.submit(admit, done)

    def _plan(self, handle: CallHandle, decision: Decision, grant, trunks, message, invite) -> RelayPlan:
        tenant = handle.assessment.organizer.tenant
        routes = self.trunks.routes(trunks, decision.e164, tenant, self.runtime.caller_id)
        headers: list[tuple[str, str]] = []
        supported = ["100rel"] if invite.has_sdp else []
        session_expires = None
        if handle.machine.bridge_timer:
            supported.append("timer")
            session_expires = invite.session_expires or self.runtime.session_expires_s
            headers.append(("Session-Expires", message.header("session-expires") or str(session_expires)))
            headers.append(("Min-SE", str(max(invite.min_se or 0, self.runtime.min_se_s))))
        if supported:
            headers.append(("Supported", ", ".join(supported)))
        return RelayPlan(
            routes=routes,
            headers=tuple(headers),
            answer_timeout_s=trunks[0].answer_timeout_s,
            max_duration_s=decision.max_duration_s,
            granted_s=grant.granted_s,
            session_expires_s=session_expires,
            redirect_host=_request_uri_host(invite.request_uri),
        )

    def _feed_decision(self, handle: CallHandle, decision: Decision) -> None:
        self.engine.feed(
            handle,
            E.Denied(
                decision.status,
                decision.reason.value,
                tuple(self.reject_headers_for(decision.reason, decision.explanation, decision.retry_after_s)),
                decision.explanation,
            ),
        )

    def _deny(self, handle: CallHandle, reason: Reason, text: str, retry_after_s: int | None = None) -> None:
        self.engine.feed(
            handle,
            E.Denied(reason.status, reason.value, tuple(self.reject_headers_for(reason, text, retry_after_s)), text),
        )

    def _answer(self, leg: int, status: int, headers) -> None:
        sc.answer(leg, status, None, encode_block(list(headers)), None, None)

    def _observe_decision(self, started: float) -> None:
        if self.metrics:
            self.metrics.decision_seconds.observe(time.perf_counter() - started)

    def reject_headers_for(self, reason: Reason, sentence: str, retry_after_s: int | None = None):
        if retry_after_s is None and reason.transient:
            retry_after_s = 1
        return reject_headers(reason.value, reason.status, sentence, self.runtime.gateway_host, retry_after_s)

    # --- refusals below the service (csrc/) ---------------------------------------------

    def on_refused(self, *, status, reason, source, transport, method, detail, call_id, call, side) -> None:
        now = time.monotonic()
        if reason == "transfer_refused" and call is not None:
            call.log.warning(
                "transfer_refused",
                leg=side,
                status=status,
                target=detail,
                explanation="call transfer (REFER) is refused: the gateway places only calls it "
                "has admitted, decided and metered",
            )
            return
        if reason == "untrusted_source":
            self.refusals.warning(
                "admission_refused",
                source,
                reason,
                now,
                reason=reason,
                status=status or None,
                explanation="the request did not come from a trusted bridge address"
                + (" over TLS" if self.runtime.require_tls else ""),
                transport=transport,
                method=method,
                answered=bool(status),
            )
            if self.metrics:
                self.metrics.admission_refused(reason)
            return
        self.refusals.warning(
            "invalid_request",
            source,
            f"{reason}:{status}",
            now,
            status=status,
            reason=reason,
            explanation=detail,
            method=method,
            call_id=call_id,
            transport=transport,
        )

    # --- ledger work for answered calls --------------------------------------------------

    def trunk_leg_opened(self, handle: CallHandle) -> None:
        pass

    def call_answered(self, handle: CallHandle) -> None:
        handle.answered_wall = at = datetime.now(UTC)
        call_id = handle.call_id

        def done(result) -> None:
            if isinstance(result, Exception):
                # The call goes on; close_call carries the answer time again.
                self._ledger_failed("answered", result)

        # Committed soon (a crash must not lose the answer), but nobody waits for the completion.
        self.ledger.submit(lambda store: store.answered(call_id, at), done, wake=False)

    def extend_grant(self, handle: CallHandle) -> None:
        call_id = handle.call_id

        def done(result) -> None:
            if isinstance(result, Exception):
                self._ledger_failed("extend", result)
                self.engine.feed(handle, E.GrantExtended(None, failed=True))
                return
            if result is None:
                self.engine.feed(handle, E.GrantExtended(handle.machine.granted_s))
            else:
                handle.grant = result
                self.engine.feed(handle, E.GrantExtended(result.granted_s, result.bucket))

        # The next chunk is asked for seconds before it is needed: no hurry.
        self.ledger.submit(lambda store: store.extend(call_id, datetime.now(UTC)), done, urgent=False)

    def _release(self, handle: CallHandle) -> None:
        call_id = handle.call_id

        def done(result) -> None:
            if isinstance(result, Exception):
                self._ledger_failed("close_call", result)

        self.ledger.submit(
            lambda store: store.close_call(
                call_id, datetime.now(UTC), Reason.OVERLOADED.value, a_status=503, b_status=None, answered_at=None
            ),
            done,
        )

    def call_finished(self, handle: CallHandle, record: CallRecord) -> None:
        """Exactly once per call: settle the ledger, then the canonical line and metrics."""
        if handle.counted:
            handle.counted = False
            self.active -= 1
        self.trunks.record(record)
        ended_wall = datetime.now(UTC)
        if not record.ledger_open:
            self._account(handle, record, None)
            return
        call_id = handle.call_id
        answered_at = handle.answered_wall if record.answered else None

        def close(store):
            return store.close_call(
                call_id,
                ended_wall,
                record.reason,
                a_status=record.bridge_status,
                b_status=record.trunk_status,
                answered_at=answered_at,
            )

        def done(result) -> None:
            if isinstance(result, Exception):
                # The call stays open in the ledger; recovery settles it to its last heartbeat.
                self._ledger_failed("close_call", result)
                result = None
            self._account(handle, record, result)

        # Settlements share commits; the canonical line follows within a poll or two.
        self.ledger.submit(close, done, urgent=False)

    def _account(self, handle: CallHandle, record: CallRecord, settlement) -> None:
        self.log.info("call", **canonical_fields(handle.call_id, handle.decision, handle.invite, record, settlement))
        if self.metrics:
            self.metrics.call_finished(handle.decision if record.admitted else None, record, settlement)

    def _ledger_failed(self, operation: str, exc: Exception) -> None:
        self.store_ok = False
        self.log.error("ledger_write_failed", operation=operation, error=str(exc) or type(exc).__name__)
        if self.metrics:
            self.metrics.ledger_errors.inc()

    # --- background ledger work ----------------------------------------------------------

    def _check_store(self) -> None:
        """Readiness probe of the ledger, every few seconds (on the writer)."""
        from store import period_of

        tenants = list(self.policy.tenants.values())

        def probe(store):
            store.schema_version()
            if not self.metrics:
                return None
            now = datetime.now(UTC)
            usage = []
            for tenant in tenants:
                row = store.bucket_row(tenant.id, period_of(now, tenant.timezone), "tenant_pool")
                used = (row["used"] + row["reserved"]) if row else 0.0
                usage.append((tenant.id, used, tenant.pool_minutes))
            return usage

        def done(result) -> None:
            if isinstance(result, Exception):
                if self.store_ok:
                    self.log.error("ledger_unreachable", error=str(result) or type(result).__name__)
                self.store_ok = False
            else:
                self.store_ok = True
                for tenant_id, used, size in result or ():
                    self.metrics.pool_used.labels(tenant_id).set(used)
                    self.metrics.pool_size.labels(tenant_id).set(size)
            self.stack.call_later(5.0, self._check_store)

        if self.ledger.pending() > 0 and self.ledger.oldest_pending_age_s() > self.runtime.store.timeout_s:
            if self.store_ok:
                self.log.error("ledger_unreachable", error="the ledger writer is not answering")
            self.store_ok = False
            self.stack.call_later(5.0, self._check_store)
            return
        self.ledger.submit(probe, done, urgent=False)

    def _heartbeat(self) -> None:
        """Every heartbeat_s: mark our live calls alive, and settle the calls of
        another gateway that stopped heartbeating (it died and did not come back)."""
        now = datetime.now(UTC)
        live = [h.call_id for h in self.engine.calls() if h.machine.ledger_open and not h.done]
        self._heartbeats += 1
        sweep = self._heartbeats % 5 == 0
        stale_after_s = self.stale_after_s

        def beat(store):
            if live:
                store.heartbeat(live, now)
            if sweep:
                store.recover_open_calls(now, stale_after_s=stale_after_s, include_own=False)
                store.prune_counters(now)

        def done(result) -> None:
            if isinstance(result, Exception):
                self._ledger_failed("heartbeat", result)

        self.ledger.submit(beat, done, urgent=False)
        self.stack.call_later(self.runtime.store.heartbeat_s, self._heartbeat)


def _request_uri_host(uri: str) -> str | None:
    """host[:port] of a sip: Request-URI (where the bridge reached us), for 3xx Contacts."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips"):
        return None
    hostport = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    return hostport or None
