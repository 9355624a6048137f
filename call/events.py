"""What happens to a call: the events the call state machine takes in.

They come from three places: the SIP engine (a response from the trunk, a
request on a leg...), the gateway's decision and ledger work (the call is
admitted or denied, its grant extended), and the clock (a timer fired).
Each is a frozen record; the machine never asks anyone anything.

Header values arrive as the engine prints them: one ``Name: value`` per line
(see ``sip.headers``). Bodies are opaque bytes with their content type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Side = Literal["bridge", "trunk"]
BRIDGE: Side = "bridge"
TRUNK: Side = "trunk"


@dataclass(frozen=True, slots=True)
class Body:
    """A message body carried across untouched (SDP, DTMF relay, ...)."""

    ctype: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TrunkRoute:
    """One way to place the trunk leg: where, as whom, with which credentials."""

    name: str
    target: str  # Request-URI, e.g. sip:+33142685300@carrier:5060;user=phone
    to_uri: str  # To header value
    from_uri: str  # From header value (the caller ID)
    contact: str  # our Contact toward this trunk
    username: str | None = None  # digest credentials, if the trunk challenges
    password: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (e.g. P-Asserted-Identity)
    setup_timeout_s: float | None = None  # no provisional by then: try the next route
    next_hop: str | None = None  # "ip:port" to send to, the Request-URI keeping the host name
    transport: str = "udp"  # of the next hop


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """How an admitted call is placed: the routes in order, and its limits."""

    routes: tuple[TrunkRoute, ...]
    headers: tuple[tuple[str, str], ...]  # headers for the trunk INVITE (timers, Supported...)
    answer_timeout_s: float
    max_duration_s: float | None  # authorised talk time; None = no limit from policy
    granted_s: float | None  # talk time reserved in the ledger so far; None = unlimited
    session_expires_s: int | None = None  # inserted toward the bridge when the trunk does no timers
    redirect_host: str | None = None  # our host:port as the bridge reaches it (3xx Contacts)


# --- the decision ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """Policy allowed the call and the ledger holds its reservation."""

    plan: RelayPlan


@dataclass(frozen=True, slots=True)
class Denied:
    """The call is refused: a policy denial, or the gateway cannot meter it."""

    status: int
    reason: str  # a reason code (policy.Reason value)
    headers: tuple[tuple[str, str], ...] = ()  # Reason, Warning, X-Dialout-Decision, Retry-After
    explanation: str = ""
    ledger_open: bool = False  # a reservation was made and must be released


# --- the SIP engine ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provisional:
    """A 101-199 from the trunk to our INVITE (possibly from one of several forks)."""

    code: int
    reason: str
    tag: str
    body: Body | None = None
    headers: str = ""
    reliable: bool = False


@dataclass(frozen=True, slots=True)
class Answered:
    """The trunk's 2xx to our INVITE."""

    code: int
    reason: str
    tag: str
    body: Body | None = None
    headers: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    """A final >= 300 from the trunk to our INVITE, or none at all (`local`:
    the transaction timed out or the transport failed)."""

    code: int
    reason: str
    headers: str = ""
    local: bool = False


@dataclass(frozen=True, slots=True)
class LegEnded:
    """A leg ended from the far side or below us.

    `how`: "bye" (the peer hung up; answered 200), "cancelled" (the bridge
    CANCELled before our answer; 487 sent), "answered_after_cancel" (the
    trunk answered as we cancelled; ACKed and BYEd), "transport" (the
    transaction failed under us).
    """

    side: Side
    how: str
    code: int = 0
    headers: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """A request inside a dialog that needs an answer (re-INVITE, UPDATE, INFO...)."""

    side: Side
    req: int
    method: str
    body: Body | None = None
    headers: str = ""


@dataclass(frozen=True, slots=True)
class Response:
    """The final answer to a request the machine sent (see SendRequest.token)."""

    side: Side
    token: int
    code: int
    reason: str = ""
    body: Body | None = None
    headers: str = ""
    needs_ack: bool = False  # a 2xx to an INVITE: the machine owes an ACK
    local: bool = False  # generated below us: timeout, transport error, not sent


@dataclass(frozen=True, slots=True)
class RequestGone:
    """A request we were to answer was cancelled or its leg ended."""

    side: Side
    req: int


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for our 2xx to an INVITE on `side` (initial or re-INVITE)."""

    side: Side
    body: Body | None = None
    initial: bool = False


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """No ACK came for our 2xx within 64*T1."""

    side: Side
    initial: bool = False


# --- the clock, the ledger and the operator ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class GrantExtended:
    """The ledger's answer to ExtendGrant: talk time reserved so far (None: unlimited)."""

    granted_s: float | None
    bucket: str | None = None
    failed: bool = False  # the ledger could not be reached; the current grant stands


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The gateway is stopping: end the call whatever its state."""

    text: str = "the gateway is shutting down"


@dataclass(frozen=True, slots=True)
class Abort:
    """Something failed while handling this call: end it cleanly on every leg."""

    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


Event = (
    Admitted
    | Denied
    | Provisional
    | Answered
    | Failed
    | LegEnded
    | Request
    | Response
    | RequestGone
    | AckReceived
    | AckTimeout
    | TimerFired
    | GrantExtended
    | Shutdown
    | Abort
)
