"""Slack (incoming webhook, Block Kit) and Microsoft Teams (Workflows webhook, Adaptive Card).

Everything in a finding that an identity, an agent or an event could have chosen (identity
uids, titles, rule texts, explanations) is escaped before it reaches a formatting language:

- Slack mrkdwn: ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` (Slack's own rule:
  no ``<!channel>``, ``<@U…>`` mention or ``<url|label>`` link survives), and a bare
  ``@channel``/``@here``/``@everyone`` gets a zero-width space after the ``@``. The header
  (plain_text) holds no finding text at all.
- Adaptive Card text (a Markdown subset): Markdown punctuation is backslash-escaped, so a
  ``[label](url)`` or ``**bold**`` in an identity renders as typed; newlines are flattened.

Slack answers ``200 ok``; Teams Workflows ``202``. A 400 is this message's fault (failed);
403/404/410 (token revoked, channel gone or archived) refuse every message (retry, then stop).

>>> slack_escape("<!channel> & <@U1> @here")
'&lt;!channel&gt; &amp; &lt;@U1&gt; @\\u200bhere'
>>> card_escape("[x](http://evil) **b**")
'\\\\[x\\\\]\\\\(http://evil\\\\) \\\\*\\\\*b\\\\*\\\\*'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import msgspec

from pipeline.outputs.base import (
    Alert,
    Delivery,
    HttpRequest,
    HttpResponse,
    by_http_status,
    fit,
    send_http,
)

__all__ = ["SlackOutput", "TeamsOutput", "build_slack", "build_teams", "card_escape",
           "slack_escape"]  # fmt: skip

_SEVERITY: Final = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
                    5: "Critical", 6: "Fatal"}  # fmt: skip
_ACTIVITY: Final = {1: "new", 2: "updated", 3: "closed"}
_BROADCAST: Final = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
# Markdown an Adaptive Card TextBlock or FactSet value could interpret: inline marks anywhere,
# block marks (heading, list) only at the start of the (flattened, one-line) text.
_CARD_MD: Final = re.compile(r"([\\`*_\[\]()<>~])")
_CARD_LINE_START: Final = re.compile(r"^([#+-]|\d+(?=\.))")
# Block Kit limits: section text 3000, a field 2000, 10 fields, context elements 10.
_SECTION_MAX: Final = 3000
_FIELD_MAX: Final = 2000
# Teams refuses messages over about 28 KB: the explanation is cut well below that.
_CARD_TEXT_MAX: Final = 4000


def slack_escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u200b\\1", text)


def card_escape(text: str) -> str:
    flat = _CARD_MD.sub(r"\\\1", " ".join(text.split()))
    m = _CARD_LINE_START.match(flat)
    if m is None:
        return flat
    if m.group(1)[0].isdigit():  # "1." starts a numbered list: escape the dot
        return flat[: m.end()] + "\\" + flat[m.end():]
    return "\\" + flat


def _headline(a: Alert) -> str:
    """A header with no finding text in it (only Custos's own words)."""
    sev = _SEVERITY.get(a.severity_id, "Unknown")
    return f"Custos: {sev} finding {_ACTIVITY.get(int(a.finding.get('activity_id') or 1), '')}"


def _link(console_url: str, a: Alert) -> str:
    return f"{console_url.rstrip('/')}/findings/{quote(a.uid, safe='')}" if console_url else ""


def _facts(a: Alert) -> list[tuple[str, str]]:
    f = a.finding
    rules = ", ".join(str(r.get("rule")) for r in a.rules) or "-"
    return [
        ("Identity", f"{a.identity} ({a.identity_kind or 'unknown'})"),
        ("Severity", f"{_SEVERITY.get(a.severity_id, 'Unknown')}"),
        ("Risk", f"{f.get('risk_score', '-')} ({f.get('risk_level', '-')})"),
        ("Status", str(f.get("status") or "-")),
        ("Rules", rules),
        ("Quarantine", "recommended" if a.custos.get("quarantine") else "no"),
    ]


def _when(a: Alert) -> str:
    return datetime.fromtimestamp(a.time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def build_slack(alert: Alert, *, console_url: str = "") -> dict[str, Any]:
    """An incoming-webhook message: header, the title and explanation, fields, context; ``text``
    is the fallback notifications show."""
    a = alert
    why = "\n".join(f"• {t}" for t in a.explanation)
    fields = [{"type": "mrkdwn", "text": fit(f"*{k}*\n{v}", _FIELD_MAX, slack_escape)}
              for k, v in _facts(a)]  # fmt: skip
    context = f"finding {a.uid} · {_when(a)}"
    link = _link(console_url, a)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _headline(a)}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": fit(f"{a.title}\n{why}", _SECTION_MAX,
                                                 slack_escape)}},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn",
                                          "text": fit(context, _FIELD_MAX, slack_escape)}]},
    ]
    if link:  # Custos's own URL: the only <link> in the message
        blocks[-1]["elements"].append({"type": "mrkdwn", "text": f"<{link}|Open in Custos>"})
    text = fit(f"{_headline(a)}: {a.title} - {a.finding.get('message') or ''}", _SECTION_MAX,
               slack_escape)  # fmt: skip
    return {"text": text, "blocks": blocks}


def build_teams(alert: Alert, *, console_url: str = "") -> dict[str, Any]:
    """A Workflows webhook message: one Adaptive Card 1.4 attachment."""
    a = alert
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": _headline(a), "size": "Large", "weight": "Bolder",
         "wrap": True},
        {"type": "TextBlock", "text": fit(a.title, 500, card_escape), "weight": "Bolder",
         "wrap": True},
        {"type": "FactSet", "facts": [{"title": k, "value": fit(v, 500, card_escape)}
                                      for k, v in _facts(a)]},
        {"type": "TextBlock", "text": fit(" / ".join(a.explanation), _CARD_TEXT_MAX, card_escape),
         "wrap": True},
        {"type": "TextBlock", "text": fit(f"finding {a.uid} - {_when(a)}", 500, card_escape),
         "isSubtle": True, "size": "Small", "wrap": True},
    ]  # fmt: skip
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    link = _link(console_url, a)
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Custos", "url": link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
         "content": card}]}  # fmt: skip


def interpret_slack(resp: HttpResponse) -> Delivery:
    bad = by_http_status(resp, "slack")
    if bad is not None:
        return bad
    if resp.body.strip() not in (b"ok", b""):
        return Delivery("failed", f"slack: {resp.body[:200]!r}")
    return Delivery("ok", "slack: ok")


def interpret_teams(resp: HttpResponse) -> Delivery:
    bad = by_http_status(resp, "teams")
    return bad if bad is not None else Delivery("ok", f"teams: {resp.status}")


class _Chat:
    name = ""

    def __init__(self, webhook_url: str, *, console_url: str = "", min_severity_id: int = 0,
                 timeout_s: float = 10.0) -> None:  # fmt: skip
        self.webhook_url = webhook_url
        self.console_url = console_url
        self.min_severity_id = min_severity_id
        self.timeout_s = timeout_s

    def _message(self, a: Alert) -> dict[str, Any]:
        raise NotImplementedError

    def _wanted(self, a: Alert) -> bool:
        # Chat channels are for alerts: findings that are not (inventory, a suppressed
        # identity's) stay in the SIEM; closes are shown for what alerted.
        return a.finding.get("is_alert") is not False and a.severity_id >= self.min_severity_id

    def build(self, alerts: Sequence[Alert]) -> list[HttpRequest]:
        return [HttpRequest("POST", self.webhook_url, {"Content-Type": "application/json"},
                            msgspec.json.encode(self._message(a)), what=f"{self.name} {a.uid}")
                for a in alerts if self._wanted(a)]  # fmt: skip


class SlackOutput(_Chat):
    name = "slack"

    def _message(self, a: Alert) -> dict[str, Any]:
        return build_slack(a, console_url=self.console_url)

    def send(self, job: HttpRequest) -> Delivery:
        return interpret_slack(send_http(job, timeout_s=self.timeout_s))


class TeamsOutput(_Chat):
    name = "teams"

    def _message(self, a: Alert) -> dict[str, Any]:
        return build_teams(a, console_url=self.console_url)

    def send(self, job: HttpRequest) -> Delivery:
        return interpret_teams(send_http(job, timeout_s=self.timeout_s))
