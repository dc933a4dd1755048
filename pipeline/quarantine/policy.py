"""Which findings become quarantine commands, and whether a human approves them first.

Pure code: decisions in, OpenC2 ``contain`` messages out (unsigned; the worker signs and sends).
A decision is quarantine-worthy when the risk policy says so (a Critical rule, or risk at the
quarantine threshold) and it is an alert (a suppressed identity is never quarantined). The
policy asks for the incident's one command once (``Decision.contain``) and again only shortly
before it lapses while evidence continues (same ``command_id``: responders refresh it instead of
stacking quarantines); a re-detection inside an open quarantine is evidence, not a command.
Severity decides the approval: at or above ``auto_min_severity`` it acts at once, below it
the command waits on the approvals topic for an analyst - as does every command the risk policy
asks first for (``Decision.ask_first``: the identity's last automatic quarantine ended
unconfirmed), its reason saying so.

>>> from pipeline.alerts.policy import RiskPolicy
>>> from pipeline.alerts.state import RiskState
>>> from pipeline.scores.explanations import RuleHit, Score
>>> hit = RuleHit("credential_misuse", 5, "credential of agt-2 used by agt-1")
>>> d = RiskPolicy().decide(RiskState(), Score("e-1", "agt-1", "agent", 1_000, 0.1, 0.0,
...                                            rules=(hit,), credential_uid="cred-9"))
>>> [p] = QuarantinePolicy(duration_ms=3_600_000).commands([d], now_ms=2_000)
>>> ext = p.message["body"]["openc2"]["request"]["args"]["x-custos"]
>>> p.identity, p.approval, ext["credentials"]
('agt-1', 'automatic', ['cred-9'])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.alerts.decisions import MAX_CONTAIN_MS, Decision
from pipeline.quarantine.commands import contain
from pipeline.quarantine.decisions import approve

__all__ = ["ASK_FIRST_NOTE", "Pending", "QuarantinePolicy"]

ASK_FIRST_NOTE = "asks an analyst first (its last automatic quarantine ended unconfirmed)"


@dataclass(frozen=True, slots=True)
class Pending:
    identity: str
    message: dict[str, Any]
    approval: str  # automatic | required | approved (an analyst confirmed)


class QuarantinePolicy:
    """Hyperparameters only; :meth:`commands` is a pure function of its inputs."""

    def __init__(
        self,
        *,
        duration_ms: int,
        auto_min_severity: int = 5,
        dry_run: bool = False,
        sender: str = "custos-worker",
        max_reason_chars: int = 600,
    ) -> None:
        if not 0 < duration_ms <= MAX_CONTAIN_MS:
            raise ValueError(f"duration_ms must be in 1..{MAX_CONTAIN_MS}")
        self.duration_ms = duration_ms
        self.auto_min_severity = auto_min_severity
        self.dry_run = dry_run
        self.sender = sender
        self.max_reason_chars = max_reason_chars

    @classmethod
    def from_settings(cls, settings: Any) -> QuarantinePolicy:
        return cls(
            duration_ms=int(settings.quarantine_duration_s * 1000),
            auto_min_severity=settings.quarantine_auto_min_severity,
            dry_run=settings.quarantine_dry_run,
            sender=settings.app_id,
        )

    def wants(self, d: Decision) -> bool:
        # d.contain: the incident's one command, re-issued only before it lapses (policy).
        return d.contain and d.quarantine and d.is_alert and d.action in ("create", "update")

    def approval_of(self, d: Decision) -> str:
        """``automatic`` (act now) or ``required`` (an analyst approves first): below
        ``auto_min_severity``, or when the policy asks first (the identity's last automatic
        quarantine ended unconfirmed)."""
        if d.ask_first or d.severity_id < self.auto_min_severity:
            return "required"
        return "automatic"

    def reason(self, d: Decision) -> str:
        """The explanation, reused verbatim: rules first, then the strongest deviations."""
        parts = [r.text for r in d.rules] + [c.text for c in d.contributions[:3]]
        text = "; ".join(parts) or d.reason
        if d.ask_first:
            text = f"{ASK_FIRST_NOTE}: {text}"
        return text[: self.max_reason_chars]

    def commands(
        self,
        decisions: Iterable[Decision],
        now_ms: int,
        approved_by: str | None = None,
        approval_proof: str | None = None,
    ) -> list[Pending]:
        """Contain commands for the quarantine-worthy decisions.

        ``approved_by``: an analyst already decided (confirmed the compromise), so the
        command is ``approved`` by them whatever its severity, never left waiting.
        """
        out = []
        for d in decisions:
            if not self.wants(d):
                continue
            approval = self.approval_of(d)
            message = contain(
                d.identity_uid, finding_uid=d.finding_uid, reason=self.reason(d),
                duration_ms=d.contain_duration_ms or self.duration_ms, now_ms=now_ms,
                sender=self.sender,
                credentials=d.credentials, dry_run=self.dry_run,
                approval="required" if approved_by else approval,
                severity_id=d.severity_id, risk_score=round(d.peak_risk),
            )  # fmt: skip
            if approved_by:
                message = approve(message, by=approved_by, now_ms=now_ms, proof=approval_proof)
                approval = "approved"
            out.append(Pending(d.identity_uid, message, approval))
        return out
