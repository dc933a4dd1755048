"""Custos's signed messages verified by golang-jwt v5 (tests/interop/golang_jwt), the JWT
library Go services and SSF receivers use: task credentials, SETs, commands, analysts'
decisions, feedback, agent-model updates and model announcements all verify under ``EdDSA``
with the JWKS as Custos publishes it; a forged signature and the RFC 9864 ``Ed25519`` name
(what Custos used to send) are refused, as a real Go receiver refuses them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from pipeline.config import Settings
from pipeline.console import decisions
from pipeline.control.feedback import Feedback
from pipeline.control.signing import SigningKey, sign_agent_model_update, sign_feedback
from pipeline.credentials.tokens import TaskClaims, issue
from pipeline.models.runtime import Announcement, encode_announcement
from pipeline.quarantine.commands import contain, sign
from pipeline.responders.base import Command
from pipeline.responders.ssf import SsfTransmitter
from pipeline.scores.agent_models import AgentModelUpdate

GO_DIR = Path(__file__).resolve().parents[1] / "interop" / "golang_jwt"


def _verify(jwks: dict[str, object], tokens: dict[str, str]) -> dict[str, dict[str, object]]:
    go = shutil.which("go")
    assert go is not None, "the Go toolchain is needed for this interop check (apt golang-go)"
    payload = {"jwks": jwks, "tokens": [{"name": k, "token": v} for k, v in tokens.items()]}
    out = subprocess.run([go, "run", "."], cwd=GO_DIR, input=json.dumps(payload), text=True,
                         capture_output=True, timeout=240, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}


def test_golang_jwt_verifies_every_kind_custos_signs_and_refuses_forgeries() -> None:
    key = SigningKey.generate("k-go")
    now_ms = int(time.time() * 1000)
    claims = TaskClaims(sub="agt-1", task="t-1", step=1, scope=("crm.read",), ceiling=1,
                        iat=now_ms // 1000, exp=now_ms // 1000 + 300, jti="cred-1",
                        iss="custos", act="agt-orch")  # fmt: skip
    command = contain("agt-1", finding_uid="f-1", reason="misuse", duration_ms=60_000,
                      now_ms=now_ms, sender="custos-worker")  # fmt: skip
    ssf = SsfTransmitter("http://127.0.0.1:9/events", key, issuer="https://custos.example",
                         audience="https://idp.example")  # fmt: skip
    sets = [r.body.decode() for r in ssf.build(Command(
        "contain", "r-1", "c-1", "agt-1", "f-1", "misuse", ("cred-1",), 5_000, None, False))]
    settings = Settings()
    tokens = {
        "task_credential": issue(claims, key),
        "command": sign(command, key).decode(),
        "feedback": sign_feedback(Feedback(uid="u", action="release", identity="agt-1",
                                           by="analyst:a", reason="r", at_ms=now_ms), key).decode(),
        "agent_model_update": sign_agent_model_update(AgentModelUpdate(
            action="approve", name="m", version="1", digest="sha256:" + "0" * 64), key).decode(),
        "announcement": encode_announcement(Announcement(
            action="promote", name="detector", version="2", manifest_sha256="0" * 64,
            by="analyst:a", at_ms=1), key).decode(),
        "console_confirm": decisions.feedback(
            settings, key, user="alice", action="confirm", identity="agt-1", finding_uid="f-1",
            reason="seen", now_ms=now_ms).value.decode(),
        **{f"set_{i}": s for i, s in enumerate(sets)},
    }  # fmt: skip
    assert len(sets) >= 2  # session-revoked and credential-change
    good = tokens["command"]
    tokens["forged"] = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    tokens["other_key"] = sign(command, SigningKey.generate("k-go")).decode()
    old_header = {"alg": "Ed25519", "typ": "custos-command+jwt", "kid": "k-go"}
    from joserfc import jws

    tokens["rfc9864_name"] = jws.serialize_compact(old_header, json.dumps(command).encode(),
                                                   key.key, algorithms=["Ed25519"])  # fmt: skip

    got = _verify(key.jwks(), tokens)
    accepted = {n for n, r in got.items() if r["ok"]}
    assert accepted == {n for n in tokens if n not in ("forged", "other_key", "rfc9864_name")}, got
    assert got["task_credential"]["claims"]["act"] == {"sub": "agt-orch"}  # type: ignore[index]
    assert "signature is invalid" in str(got["forged"]["error"])
    assert "signature is invalid" in str(got["other_key"]["error"])
    assert "signing method (alg) is unavailable" in str(got["rfc9864_name"]["error"])
