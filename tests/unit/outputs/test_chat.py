"""Slack (Block Kit) and Teams (Adaptive Card) messages as a local receiver gets them, with
hostile text in the finding: nothing it carries may mention, link or format."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pipeline.outputs.chat import SlackOutput, TeamsOutput, card_escape, slack_escape
from pipeline.scores.explanations import RuleHit
from tests.unit.outputs.receivers import HttpReceiver, alert

HOSTILE_ID = "<!channel> @here & <@U024BE7LH|boss> <https://evil.example|click>"
HOSTILE_RULE = RuleHit("credential_misuse", 5, "used by [me](https://evil.example) **now**\n- x")


def _texts(node: Any) -> list[str]:
    """Every "text" and fact value in a Block Kit or Adaptive Card tree."""
    if isinstance(node, dict):
        own = [node[k] for k in ("text", "value") if isinstance(node.get(k), str)]
        return own + [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return []


def test_slack_message_arrives_escaped_with_blocks_and_fallback() -> None:
    a = alert(identity=HOSTILE_ID, rules=[HOSTILE_RULE])
    with HttpReceiver([(200, b"ok")]) as r:
        out = SlackOutput(r.url + "/services/T/B/x", console_url="https://console.example")
        [job] = out.build([a])
        assert out.send(job).status == "ok"
    [req] = r.requests
    assert req.path == "/services/T/B/x"
    msg = json.loads(req.body)
    types = [b["type"] for b in msg["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert msg["blocks"][0]["text"] == {"type": "plain_text",
                                        "text": "Custos: High finding new"}  # fmt: skip
    assert len(msg["blocks"][2]["fields"]) == 6
    texts = [msg["text"], *_texts(msg["blocks"])]
    links = [m for t in texts for m in re.findall(r"<[^>]*>", t)]
    # The only link is Custos's own; no <!channel>, <@U…> or foreign link survives.
    assert links == ["<https://console.example/findings/f-1|Open in Custos>"]
    assert not any(re.search(r"(?<!\u200b)@here", t) for t in texts)
    identity = next(f["text"] for f in msg["blocks"][2]["fields"] if "Identity" in f["text"])
    assert "&lt;!channel&gt; @\u200bhere &amp; &lt;@U024BE7LH|boss&gt;" in identity
    assert msg["text"].startswith("Custos: High finding new: Zero Trust rule")


def test_slack_sizes_stay_within_block_kit_limits() -> None:
    a = alert(identity="&" * 5000, rules=[RuleHit("r", 4, "<" * 10_000)])
    msg = json.loads(SlackOutput("http://x").build([a])[0].body)
    assert len(msg["blocks"][1]["text"]["text"]) <= 3000
    assert all(len(f["text"]) <= 2000 for f in msg["blocks"][2]["fields"])
    # Cut outside an entity: every & starts a whole escape.
    assert all(re.fullmatch(r"(&amp;|&lt;|&gt;|[^&])*", t) for t in _texts(msg["blocks"]))


def test_teams_card_arrives_as_an_adaptive_card_with_markdown_escaped() -> None:
    a = alert(identity="[x](https://evil.example)", rules=[HOSTILE_RULE])
    with HttpReceiver([(202, b"")]) as r:
        out = TeamsOutput(r.url + "/workflows/abc", console_url="https://console.example")
        [job] = out.build([a])
        assert out.send(job).status == "ok"
    [req] = r.requests
    msg = json.loads(req.body)
    assert msg["type"] == "message"
    [att] = msg["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] in ("1.4", "1.5")
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in Custos",
                                "url": "https://console.example/findings/f-1"}]  # fmt: skip
    texts = _texts(card["body"])
    # No unescaped link syntax or emphasis, no line that starts a list.
    assert not any(re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", t) for t in texts)
    assert not any(re.search(r"(?<!\\)\*\*", t) or "\n" in t for t in texts)
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Identity"] == r"\[x\]\(https://evil.example\) \(agent\)"
    assert len(req.body) < 28_000


@pytest.mark.parametrize(("text", "escaped"),
                         [("- item", r"\- item"), ("1. one", r"1\. one"), ("# h", r"\# h"),
                          ("a-b.c", "a-b.c")])  # fmt: skip
def test_card_escape_only_touches_block_marks_at_the_start(text: str, escaped: str) -> None:
    assert card_escape(text) == escaped


def test_slack_escape_is_slacks_three_entities() -> None:
    assert slack_escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"
    assert slack_escape("@channel @Everyone") == "@\u200bchannel @\u200bEveryone"


def test_chat_sends_alerts_only() -> None:
    out = SlackOutput("http://x", min_severity_id=4)
    jobs = out.build([alert(), alert(is_alert=False, status_id=3, action="update"),
                      alert(severity_id=3)])  # fmt: skip
    assert len(jobs) == 1


@pytest.mark.parametrize(
    ("cls", "answer", "status"),
    [
        (SlackOutput, (200, b"ok"), "ok"),
        (SlackOutput, (400, b"invalid_payload"), "failed"),
        (SlackOutput, (403, b"invalid_token"), "retry"),
        (SlackOutput, (404, b"channel_not_found"), "retry"),
        (SlackOutput, (410, b"channel_is_archived"), "retry"),
        (SlackOutput, (429, b"rate_limited"), "retry"),
        (SlackOutput, (500, b"rollup_error"), "retry"),
        (TeamsOutput, (202, b""), "ok"),
        (TeamsOutput, (400, b"bad card"), "failed"),
        (TeamsOutput, (429, b""), "retry"),
        (TeamsOutput, (502, b""), "retry"),
    ],
)
def test_answers(cls: type[SlackOutput | TeamsOutput], answer: tuple[int, bytes],
                 status: str) -> None:  # fmt: skip
    with HttpReceiver([answer]) as r:
        out = cls(r.url)
        [job] = out.build([alert()])
        assert out.send(job).status == status
