"""Every OCSF event Custos produces validates strictly against OCSF 1.8.0.

The checker is independent of Custos: the JSON schemas of the ``ocsf-json-schema`` package
(generated from the OCSF schema), applied with ``jsonschema`` (draft 2020-12), which refuses
any attribute the class does not have outside ``unmapped`` and any profile attribute whose
profile ``metadata.profiles`` does not declare.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from pipeline.config import REPO_ROOT, Settings
from pipeline.credentials.rejections import rejection_event
from pipeline.credentials.tokens import TaskClaims
from pipeline.events.schemas import EventDecoder
from pipeline.ops.live import agent_call_event
from pipeline.simulate import Simulation

OCSF = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.8.0"))


@cache
def _validator(class_uid: int, profiles: tuple[str, ...]) -> jsonschema.Draft202012Validator:
    name = OCSF.lookup_class_name_from_uid(class_uid)
    return jsonschema.Draft202012Validator(OCSF.get_class_schema(name, list(profiles)))


def ocsf_errors(doc: dict[str, Any]) -> list[str]:
    profiles = tuple(doc.get("metadata", {}).get("profiles", []))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _validator(doc["class_uid"], profiles).iter_errors(doc)]  # fmt: skip


@pytest.mark.parametrize("profile", ["default", "agent_fleet", "secret_services"])
def test_simulated_events_are_valid_ocsf(profile: str) -> None:
    sim = Simulation(Settings(), identities=300, duration_s=6 * 3600, seed=3, profile=profile)
    seen: Counter[int] = Counter()
    bad: Counter[str] = Counter()
    for _, _, value, _ in itertools.islice(sim.events(), 20_000):
        doc = json.loads(value)
        seen[doc["class_uid"]] += 1
        bad.update(ocsf_errors(doc))
    assert seen[3002] > 100 and seen[6003] > 100, seen
    assert not bad, bad.most_common(5)


def test_live_agent_and_credential_broker_events_are_valid_ocsf() -> None:
    call = agent_call_event("agt-live-01", task="task-1", step=2, operation="crm.read",
                            service="crm", credential={"uid": "cred-1", "issued_to": "agt-live-01",
                                                       "task_uid": "task-1", "step": 2,
                                                       "expires_at": 1_900_000_000_000},
                            delegated_by="usr-1", now_ms=1_800_000_000_000)  # fmt: skip
    claims = TaskClaims(sub="agt-1", task="t-1", step=1, scope=("crm.read",), ceiling=1,
                        iat=1_000, exp=1_300, jti="cred-1", iss="custos", act="usr-9")  # fmt: skip
    refusals = [
        rejection_event(presenter="agt-2", claims=claims, reason="wrong_holder", detail="x",
                        operation="crm.read", service="crm", now_ms=1_800_000_000_000,
                        src_ip="10.0.0.7"),
        rejection_event(presenter="agt-3", claims=None, reason="malformed", detail="junk",
                        operation=None, service=None, now_ms=1_800_000_000_000, src_ip=None),
        rejection_event(presenter="agt-4", claims=claims, reason="out_of_scope", detail="y",
                        operation="crm.write", service=None, now_ms=1_800_000_000_000,
                        src_ip=None, claimed_presenter="agt-5"),
    ]
    decoder = EventDecoder(max_future_skew_ms=10**13)
    for doc in [call, *refusals]:
        assert ocsf_errors(doc) == [], doc
        decoder.decode(json.dumps(doc).encode())  # and still Custos's own contract


def _doc_examples(path: Path) -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", path.read_text(), flags=re.S)
    return [d for d in (json.loads(b) for b in blocks) if isinstance(d, dict) and "class_uid" in d]


def test_the_contracts_examples_are_valid_ocsf() -> None:
    examples = _doc_examples(REPO_ROOT / "docs" / "EVENTS.md")
    assert len(examples) >= 2
    for doc in examples:
        assert ocsf_errors(doc) == [], doc


def test_the_old_contract_forms_still_decode_to_the_same_event() -> None:
    """traffic and a single data_classification (Custos's first contract, not OCSF for 6003)
    decode as the OCSF forms do: producers written against the old contract keep working."""
    new = {
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "type_uid": 600302,
        "severity_id": 1, "time": 1_800_000_000_000, "status_id": 1,
        "metadata": {"uid": "e-1", "version": "1.8.0", "product": {"name": "t"},
                     "profiles": ["data_classification"]},
        "actor": {"user": {"uid": "agt-1", "type_id": 1}},
        "api": {"operation": "s3.GetObject", "service": {"name": "s3"}},
        "src_endpoint": {"ip": "10.0.0.1"},
        "resources": [{"uid": "s3://a", "type": "object",
                       "data_classifications": [{"confidentiality_id": 1},
                                                {"confidentiality_id": 6}]}],
        "http_request": {"length": 912},
        "http_response": {"code": 200, "length": 48_213},
        "unmapped": {"identity_kind": "agent"},
    }  # fmt: skip
    assert ocsf_errors(new) == []
    old = json.loads(json.dumps(new))
    del old["http_request"], old["http_response"]
    old["traffic"] = {"bytes_in": 48_213, "bytes_out": 912}
    old["resources"][0] = {"uid": "s3://a", "type": "object",
                           "data_classification": {"confidentiality_id": 6}}  # fmt: skip
    decoder = EventDecoder(max_future_skew_ms=10**13)
    a, b = decoder.decode(json.dumps(new).encode()), decoder.decode(json.dumps(old).encode())
    assert a == b and (a.bytes_in, a.bytes_out) == (48_213, 912)
    assert a.resources[0].confidentiality_id == 6  # Restricted outranks Not Confidential


def test_findings_are_valid_ocsf_detection_findings() -> None:
    """The policy's findings over an attacked population (creates, updates, closes, rules and
    behaviour) and the responder's "quarantine failed" finding, class 2004."""
    from pipeline.alerts.findings import build_finding
    from pipeline.detection import Detection
    from pipeline.engine import Engine
    from pipeline.responders.base import Command
    from pipeline.responders.responder import failure_finding, response

    settings = Settings()
    sim = Simulation(settings, identities=300, duration_s=12 * 3600, seed=5)
    decoder = EventDecoder(max_future_skew_ms=10**13)
    events = sorted((decoder.decode(v) for _, _, v, _ in sim.events()), key=lambda e: e.time_ms)
    findings = [build_finding(d, product_version="test")
                for _, result in Engine(Detection(settings)).run(events, settings.worker_batch)
                for d in result.decisions]  # fmt: skip
    kinds = Counter((f["activity_id"], bool(f["finding_info"].get("analytic"))) for f in findings)
    assert len(findings) > 20 and {1, 2} <= {a for a, _ in kinds}, kinds
    bad = Counter(err for f in findings for err in ocsf_errors(f))
    assert not bad, bad.most_common(5)
    cmd = Command("contain", "r-1", "c-1", "agt-1", "f-1", "misuse", ("cred-1",), 1_000, None,
                  False)  # fmt: skip
    final = response("r-1", 500, "adapter failed", sender="custos-responder", to="custos",
                     now_ms=2_000, results={"x-custos": {"failed": {"vault": "503"}}})  # fmt: skip
    assert ocsf_errors(failure_finding(cmd, final, 2_000, "test")) == []
