"""What the call state machine asks the world to do: its actions.

The gateway's shell (gateway/engine.py) carries them out in order: SIP
messages through the SIP engine, timers on the loop's clock, ledger work on
the ledger writer, log lines and metrics. None of them returns anything to
the machine directly; results come back as events.
"""

from __future__ import annotations

from dataclasses import dataclass

from call.events import Body, Side, TrunkRoute

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AnswerBridge:
    """A response to the bridge's INVITE: provisional, 200, or a final refusal."""

    code: int
    reason: str = ""
    headers: Headers = ()
    body: Body | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    """Place the trunk leg: an INVITE along `route`."""

    route: TrunkRoute
    headers: Headers = ()
    body: Body | None = None


@dataclass(frozen=True, slots=True)
class CancelTrunk:
    """CANCEL the trunk INVITE (held by the engine until a provisional came).
    `abandon`: with no provisional yet, give the attempt up at once (the next
    route is waiting) instead of waiting for one to send the CANCEL."""

    abandon: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """The ACK owed to `side` for its 2xx to our INVITE (with the answer, for a late offer)."""

    side: Side
    body: Body | None = None


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A request inside the dialog of `side`; its answer comes back as a
    Response event carrying `token`. A BYE ends the leg at once."""

    side: Side
    method: str
    headers: Headers = ()
    body: Body | None = None
    token: int = 0


@dataclass(frozen=True, slots=True)
class Respond:
    """The answer to a Request event (`req` is the engine's id)."""

    side: Side
    req: int
    code: int
    reason: str = ""
    headers: Headers = ()
    body: Body | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    """End `side` whatever its state (abort and shutdown): `code` to an
    unanswered bridge, CANCEL to an unanswered trunk, BYE otherwise."""

    side: Side
    code: int = 500


@dataclass(frozen=True, slots=True)
class StartTimer:
    """(Re)start the timer `name`: TimerFired(name) after `seconds`."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class MarkAnswered:
    """Tell the ledger the call was answered (billing starts now)."""


@dataclass(frozen=True, slots=True)
class ExtendGrant:
    """Ask the ledger for the next chunk of talk time (answer: GrantExtended)."""


@dataclass(frozen=True, slots=True)
class Log:
    """A log event of this call that is not its canonical line."""

    event: str
    fields: tuple[tuple[str, object], ...] = ()
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Finish:
    """The call is over on every leg: settle the ledger (when it holds a
    reservation), write the canonical line, count it. Emitted exactly once."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class TrunkAttempt:
    trunk: str
    status: int | None
    next_hop: str | None = None  # the address tried, when the trunk's host name resolved to several


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the machine knows of a finished call, for the ledger and the canonical line."""

    reason: str  # the outcome's reason code
    bridge_status: int | None  # the final status the bridge got
    trunk_status: int | None  # the final status the trunk gave
    answered: bool  # the trunk answered (talk time is billable)
    answered_at: float | None  # monotonic time of the answer
    ended_at: float  # monotonic time of the end
    setup_ms: float | None  # INVITE received -> final answer to the bridge
    ended_by: str | None  # bridge, trunk, gateway, session_timer, ack_timeout
    ledger_open: bool  # the ledger holds a reservation to settle
    explanation: str | None = None
    admitted: bool = False  # the call was admitted (policy, routing and the ledger said yes)
    trunk: str | None = None  # the trunk that answered or gave the final status
    trunk_attempts: tuple[TrunkAttempt, ...] = ()

    @property
    def talk_s(self) -> float:
        return max(0.0, self.ended_at - self.answered_at) if self.answered_at is not None else 0.0


Action = (
    AnswerBridge
    | Dial
    | CancelTrunk
    | Ack
    | SendRequest
    | Respond
    | Hangup
    | StartTimer
    | CancelTimer
    | MarkAnswered
    | ExtendGrant
    | Log
    | Finish
)
