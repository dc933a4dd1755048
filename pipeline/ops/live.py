"""Live agents that really use the credential broker, so the demo closes the loop.

The bulk simulator writes events for hours of simulated time in seconds; credentials cannot
follow that clock. These few agents run in real time instead: for every step they ask the
broker for a task credential, present it (``/v1/access``, as a resource server would), report
the call as an OCSF 6003 event, and complete the step. When :meth:`LiveAgents.hijack_now` is
called (or after ``compromise_after_s``) one of them is hijacked: it presents a credential the
broker issued to a teammate. Detection sees that event, the worker publishes a signed
``contain``, a responder blocks the agent at the broker - and from then on the hijacked agent's
calls and credential requests are refused, which :attr:`LiveAgents.log` records (and the
refusals reach detection as events too).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.ops.localhost import call_json
from pipeline.simulate.catalogue import agent_config_hash

__all__ = ["LiveAgents", "agent_call_event"]


def agent_call_event(
    agent: str, *, task: str, step: int, operation: str, service: str, credential: dict[str, Any],
    delegated_by: str | None = None, now_ms: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The OCSF 6003 event of one successful agent call (the input contract).

    The agent's tool manifest and system prompt hashes are stable per agent (as the bulk
    simulator's): a hijack presents stolen credentials, it does not redeploy the agent.
    """
    unmapped: dict[str, Any] = {
        "identity_kind": "agent",
        "credential": credential,
        "environment": "prod-eu",
        "rationale": f"step {step} of {task}: {operation}",
        "tool_manifest_hash": agent_config_hash(agent, "tools"),
        "system_prompt_hash": agent_config_hash(agent, "prompt"),
    }
    if delegated_by:
        unmapped["delegated_by"] = delegated_by
    return {
        "class_uid": 6003, "category_uid": 6, "activity_id": 2, "type_uid": 600302,
        "severity_id": 1, "status_id": 1, "time": now_ms or int(time.time() * 1000),
        "metadata": {"uid": str(uuid.uuid4()), "version": "1.8.0",
                     "product": {"name": "custos-live-agents"}},
        "actor": {"user": {"uid": agent, "type_id": 99, "type": "AI Agent"},
                  "session": {"uid": task}},
        "api": {"operation": operation, "service": {"name": service}},
        # The live agents run on this machine (OCSF requires a source endpoint).
        "src_endpoint": {"ip": "127.0.0.1"},
        "unmapped": unmapped,
    }  # fmt: skip


@dataclass
class LiveAgents:
    """A handful of agents working through the broker in a background thread."""

    broker_url: str
    api_token: str
    producer: Any  # confluent_kafka.Producer
    topic: str
    agents: tuple[str, ...] = ("agt-live-01", "agt-live-02", "agt-live-03", "agt-live-04")
    hijacked: str = "agt-live-03"
    compromise_after_s: float | None = None  # None: only when hijack_now() is called
    period_s: float = 0.5
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (t, agent, what)
    counts: dict[str, int] = field(default_factory=dict)
    hijacked_at: float | None = None  # time.time() of the first hijacked call
    _stop: threading.Event = field(default_factory=threading.Event)
    _hijack: threading.Event = field(default_factory=threading.Event)

    def hijack_now(self) -> None:
        self._hijack.set()

    def _http(self, path: str, body: dict[str, Any], bearer: str) -> tuple[int, dict[str, Any]]:
        return call_json("POST", self.broker_url + path, bearer, body)

    def _note(self, agent: str, what: str) -> None:
        self.log.append((time.time(), agent, what))
        self.counts[what.split(":")[0]] = self.counts.get(what.split(":")[0], 0) + 1

    def step(self, agent: str, n: int, stolen: dict[str, Any] | None) -> dict[str, Any] | None:
        """One step: credential, call, event, completion. Returns the credential issued."""
        task = f"task-{agent}-{n // 3}"
        code, got = self._http("/v1/credentials", {"agent": agent, "task": task, "step": n % 3,
                                                   "scope": ["crm.read"], "ceiling": 1},
                               self.api_token)  # fmt: skip
        if code != 201:
            self._note(agent, f"issuance refused: {got.get('error_description', code)}")
            return None
        cred = {"uid": got["jti"], "issued_to": agent, "task_uid": task, "step": n % 3,
                "expires_at": got["expires_at"] * 1000}  # fmt: skip
        token = got["credential"]
        if stolen is not None:  # the hijack: present a teammate's credential instead
            cred, token = stolen["claims"], stolen["token"]
            task, step = cred["task_uid"], cred["step"]
        else:
            step = n % 3
        use = {"agent": agent, "task": task, "step": step, "operation": "crm.read"}
        # As the resource server that saw this agent call (it vouches for the presenter).
        code, answer = call_json("POST", self.broker_url + "/v1/access", token, use,
                                 headers={"X-Custos-Resource-Token": self.api_token})  # fmt: skip
        if code != 200:
            self._note(agent, f"call refused: {answer.get('reason', code)}")
        else:
            self._note(agent, "call ok")
        event = agent_call_event(agent, task=task, step=step, operation="crm.read",
                                 service="crm", credential=cred)  # fmt: skip
        self.producer.produce(self.topic, key=agent.encode(), value=msgspec.json.encode(event))
        self.producer.poll(0)
        if stolen is None:
            self._http(f"/v1/credentials/{got['jti']}/complete", {}, self.api_token)
        return {"claims": cred, "token": got["credential"]}

    def run(self) -> None:
        t0 = time.monotonic()
        n = 0
        last: dict[str, dict[str, Any]] = {}
        while not self._stop.is_set():
            after = self.compromise_after_s
            hijack = self._hijack.is_set() or (after is not None and time.monotonic() - t0 >= after)
            for agent in self.agents:
                victim = self.agents[0]
                stolen = last.get(victim) if hijack and agent == self.hijacked else None
                if stolen is not None and "hijacked" not in self.counts:
                    self._note(agent, f"hijacked: presents a credential issued to {victim}")
                    self.hijacked_at = time.time()
                got = self.step(agent, n, stolen)
                if got is not None and agent == victim:
                    last[victim] = got
            n += 1
            self.producer.flush(5)
            self._stop.wait(self.period_s)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="live-agents", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
