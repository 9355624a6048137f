"""Per-trunk counts for `summary`: attempts, answers, ASR, failures and failovers.

From the canonical line's `trunk_attempts` (every trunk tried, in order, with
its final status or null) and `trunk` (the one that answered or gave the
final status). A line without `trunk_attempts` (the Kamailio plugin's, or an
older gateway's) counts as one attempt on its `trunk` with `trunk_status`.

- attempts: INVITEs sent to the trunk; answers: those it answered 2xx;
  ASR (answer-seizure ratio) = answers / attempts.
- failures by class: `4xx`, `5xx`, `6xx`, `3xx`, or `timeout` (408, or no
  final status: cancelled after `setup_timeout_s` or `answer_timeout_s`),
  as the gateway's `dialout_trunk_failures_total{class}`.
- failed over from / to: attempts after which the call went on to the next
  trunk, and attempts that a failover led to.
- a failover call is one with more than one attempt; `paths` counts each
  (from, to) step of those calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Per trunk: [attempts, answers, failed_over_from, failed_over_to, final]
_ATTEMPTS, _ANSWERS, _FROM, _TO, _FINAL = range(5)


def failure_class(status: Any) -> str:
    if type(status) is not int or status == 408:
        return "timeout"
    return f"{status // 100}xx"


@dataclass
class TrunkTally:
    """Counts over many calls; partial tallies (one per block or worker) merge."""

    trunks: dict[str, list[int]] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (trunk, class) -> attempts
    paths: dict[tuple[str, str], int] = field(default_factory=dict)  # (from, to) -> failovers
    routed: int = 0  # calls with at least one attempt
    failover_calls: int = 0  # ... with more than one
    failover_answered: int = 0  # ... of which the last trunk answered

    def add(self, e: dict[str, Any]) -> None:
        """One canonical line (only called for lines that name a trunk)."""
        attempts = e.get("trunk_attempts")
        if type(attempts) is not list:
            trunk = e.get("trunk")
            if type(trunk) is not str:
                return
            attempts = [{"trunk": trunk, "status": e.get("trunk_status")}]
        previous = None
        names: list[str] = []
        answered = False
        for attempt in attempts:
            if type(attempt) is not dict or type(attempt.get("trunk")) is not str:
                continue
            name, status = attempt["trunk"], attempt.get("status")
            row = self.trunks.get(name)
            if row is None:
                row = self.trunks[name] = [0, 0, 0, 0, 0]
            row[_ATTEMPTS] += 1
            answered = type(status) is int and 200 <= status < 300
            if answered:
                row[_ANSWERS] += 1
            else:
                key = (name, failure_class(status))
                self.failures[key] = self.failures.get(key, 0) + 1
            if previous is not None:
                self.trunks[previous][_FROM] += 1
                row[_TO] += 1
                step = (previous, name)
                self.paths[step] = self.paths.get(step, 0) + 1
            previous = name
            names.append(name)
        if not names:
            return
        self.routed += 1
        final = e.get("trunk")
        self.trunks[final if final in names else names[-1]][_FINAL] += 1
        if len(names) > 1:
            self.failover_calls += 1
            self.failover_answered += answered

    def merge(self, other: TrunkTally) -> None:
        for name, counts in other.trunks.items():
            row = self.trunks.setdefault(name, [0, 0, 0, 0, 0])
            for i, v in enumerate(counts):
                row[i] += v
        for mine, theirs in ((self.failures, other.failures), (self.paths, other.paths)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.routed += other.routed
        self.failover_calls += other.failover_calls
        self.failover_answered += other.failover_answered

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        rows = sorted(self.trunks.items(), key=lambda kv: (-kv[1][_ATTEMPTS], kv[0]))
        paths = sorted(self.paths.items(), key=lambda kv: (-kv[1], kv[0]))
        if top > 0:
            rows, paths = rows[:top], paths[:top]
        trunks = []
        for name, (attempts, answers, failed_from, failed_to, final) in rows:
            failures = {cls: n for (trunk, cls), n in sorted(self.failures.items()) if trunk == name}
            trunks.append(
                {
                    "trunk": name,
                    "attempts": attempts,
                    "answers": answers,
                    "asr": round(answers / attempts, 4) if attempts else None,
                    "failures": failures,
                    "failed_over_from": failed_from,
                    "failed_over_to": failed_to,
                    "final": final,
                }
            )
        return {
            "calls": self.routed,
            "failover_calls": self.failover_calls,
            "failover_answered": self.failover_answered,
            "trunks": trunks,
            "failovers": [{"from": a, "to": b, "calls": n} for (a, b), n in paths],
        }
