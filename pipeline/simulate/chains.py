"""Agent task chains: a human (or a scheduling service) hands a root agent a task; orchestrator
agents split it and delegate parts to their habitual downstream agents.

A *segment* is one agent's run of steps inside one task. Expanding a segment gives one
Authentication event (the agent obtains its task token from ``agent-sts``) and one API Activity
event per step. Every step carries a task-scoped credential issued to that agent for that step
and expiring shortly after it; ``actor.session.uid`` and the credential's ``task_uid`` are the
task. An orchestrator's delegation is itself a step: a call to ``a2a``/``tasks.delegate`` whose
resource is the downstream agent, followed by that agent's own segment with
``delegated_by`` = the orchestrator.

>>> from pipeline.simulate.profiles import build_population
>>> from pipeline.simulate.seeds import rng_for
>>> from pipeline.simulate.behaviours import Habits
>>> pop = build_population(400, seed=5)
>>> habits = Habits(pop)
>>> rng = rng_for(5, 1)
>>> b, next_task = agent_events(habits, 1_700_000_000_000, 3_600_000, rng, 0)
>>> next_task > 0 and bool((b.ident >= pop.n_human + pop.n_service).all())
True
>>> api = b.take(b.eclass == 1)
>>> bool((api.cred_exp > api.time).all()) and bool((api.cred_to == api.ident).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from pipeline.simulate.batches import API, AUTH, Batch
from pipeline.simulate.behaviours import Habits
from pipeline.simulate.catalogue import PROTO_OAUTH
from pipeline.simulate.seeds import Array, zipf_rank

__all__ = ["Segments", "agent_events", "delegate", "expand"]

_HOUR_MS: Final = 3_600_000
STEP_GAP_MS: Final = 3_000.0  # median think + tool time between steps
CRED_TTL_MS: Final = (30_000, 120_000)  # a step credential expires this long after the step
DELEGATE_MAX: Final = 3  # delegations per orchestrator task


@dataclass(slots=True)
class Segments:
    """One agent's part of a task each (parallel arrays)."""

    task: Array  # int64 task serial
    agent: Array  # agent identity
    deleg: Array  # delegated_by identity (-1: nobody)
    start: Array  # int64 ms
    n: Array  # steps (>= 1)
    env: Array  # environment the agent runs in for this segment
    camp: Array | None = None  # ground truth, -1 benign

    def __len__(self) -> int:
        return len(self.task)


def expand(
    habits: Habits,
    seg: Segments,
    rng: np.random.Generator,
    *,
    gap_ms: float = STEP_GAP_MS,
    sign_in: bool = True,
) -> Batch:
    """Events of each segment: a token sign-in at its start, then its steps."""
    pop, cat = habits.pop, habits.cat
    m = len(seg)
    if m == 0:
        return Batch.empty()
    n = np.maximum(seg.n.astype(np.int64), 1)
    total = int(n.sum())
    row = np.repeat(np.arange(m), n)
    first = np.cumsum(n) - n
    k = np.arange(total) - first[row]  # step index within its segment
    gaps = np.clip(rng.lognormal(np.log(gap_ms), 0.9, total), 200.0, 120_000.0).astype(np.int64)
    cs = np.cumsum(gaps)
    time = seg.start[row].astype(np.int64) + cs - (cs[first] - gaps[first])[row]
    ident = seg.agent[row].astype(np.int64)
    env = seg.env[row]
    op = habits.ops(ident, rng)
    res = habits.resources(ident, op, rng)
    status = habits.failures(ident, rng)
    b_in, b_out = habits.volumes(ident, op, status, rng)
    geo, asn, ip = habits.workload_network(ident, env)
    camp = seg.camp[row] if seg.camp is not None else -1
    steps = Batch.new(
        total,
        time=time,
        ident=ident,
        eclass=API,
        activity=cat.op_activity[op],
        status=status,
        svc=cat.op_service[op],
        op=op,
        res=res,
        bytes_in=b_in,
        bytes_out=b_out,
        geo=geo,
        asn=asn,
        ip=ip,
        task=seg.task[row],
        step=k + 1,
        deleg=seg.deleg[row],
        cred_to=ident,
        cred_step=k + 1,
        cred_exp=time + rng.integers(CRED_TTL_MS[0], CRED_TTL_MS[1] + 1, total),
        model=pop.model[ident],
        env=env,
        why=habits.rationale(op, rng),
        camp=camp,
    )
    if habits.with_counterparties:
        steps.cpty[:] = habits.counterparties(ident, op, time, rng)
    if not sign_in:
        return steps
    agent = seg.agent.astype(np.int64)
    geo, asn, ip = habits.workload_network(agent, seg.env)
    tokens = Batch.new(
        m,
        time=seg.start,
        ident=agent,
        eclass=AUTH,
        activity=1,
        status=1,
        svc=cat.auth_service["agent-sts"],
        geo=geo,
        asn=asn,
        ip=ip,
        mfa=0,
        proto=PROTO_OAUTH,
        task=seg.task,
        deleg=seg.deleg,
        model=pop.model[agent],
        env=seg.env,
        camp=seg.camp if seg.camp is not None else -1,
    )
    return Batch.concat([tokens, steps])


def delegate(
    habits: Habits,
    b: Batch,
    rows: Array,
    workers: Array,
    rng: np.random.Generator,
    camp: Array | int = -1,
) -> Segments:
    """Turn step ``rows`` of ``b`` into delegations to ``workers``; return the workers' segments."""
    pop, cat = habits.pop, habits.cat
    b.op[rows] = habits.delegate_op
    b.svc[rows] = cat.op_service[habits.delegate_op]
    b.activity[rows] = cat.op_activity[habits.delegate_op]
    b.res[rows] = -1
    b.cpty[rows] = -1
    b.peer[rows] = workers
    b.status[rows] = 1
    b.bytes_in[rows] = 200 + rng.integers(0, 400, len(rows))
    b.bytes_out[rows] = 800 + rng.integers(0, 3000, len(rows))
    start, count = cat.delegate_why
    b.why[rows] = start + rng.integers(0, count, len(rows))
    return Segments(
        task=b.task[rows],
        agent=workers,
        deleg=b.ident[rows],
        start=b.time[rows] + rng.integers(100, 1500, len(rows)),
        n=1 + rng.poisson(np.maximum(pop.steps[workers] - 1.0, 0.0)),
        env=pop.env[workers],
        camp=np.broadcast_to(np.asarray(camp, dtype=np.int32), len(rows)).copy(),
    )


def agent_events(
    habits: Habits,
    t0: int,
    dt_ms: int,
    rng: np.random.Generator,
    next_task: int,
) -> tuple[Batch, int]:
    """Tasks starting in ``[t0, t0 + dt_ms)`` and all their steps (some fall in later slices).

    Tasks arrive while the root agent's owner is active (thinning, as for humans; agents
    owned by services work around the clock). Returns the events and the next free task serial.
    """
    pop = habits.pop
    if len(pop.roots) == 0:
        return Batch.empty(), next_task
    roots = pop.roots.astype(np.int64)
    candidates = np.repeat(roots, rng.poisson(pop.api_rate[roots] * (dt_ms / _HOUR_MS)))
    start = t0 + rng.integers(0, dt_ms, len(candidates))
    keep = rng.random(len(candidates)) < pop.owner_activity(candidates, start)
    agents, start = candidates[keep], start[keep]
    t = len(agents)
    if t == 0:
        return Batch.empty(), next_task
    task = next_task + np.arange(t, dtype=np.int64)
    ndel = np.where(pop.team_size[agents] > 0, 1 + rng.binomial(DELEGATE_MAX - 1, 0.4, t), 0)
    seg = Segments(
        task=task,
        agent=agents,
        deleg=pop.owner[agents],
        start=start,
        n=1 + rng.poisson(np.maximum(pop.steps[agents] - 1.0, 0.0)) + ndel,
        env=pop.env[agents],
    )
    b = expand(habits, seg, rng)
    # An orchestrator plans (step 1), delegates (steps 2..1+ndel), then gathers results.
    per_row = ndel[np.clip(b.task - next_task, 0, t - 1)]
    rows = np.flatnonzero((b.eclass == API) & (b.step >= 2) & (b.step <= 1 + per_row))
    if len(rows) == 0:
        return b, next_task + t
    orch = b.ident[rows]
    slot = zipf_rank(rng.random(len(rows)), pop.team_size[orch])
    workers = pop.team_member(orch, slot)
    ok = workers >= 0
    rows, workers = rows[ok], workers[ok]
    sub = delegate(habits, b, rows, workers, rng)
    sb = expand(habits, sub, rng)
    traits = pop.traits
    if traits is None or traits.chain_depth <= 2:
        return Batch.concat([b, sb]), next_task + t
    return Batch.concat(
        [b, sb, *_deeper(habits, sb, traits.chain_depth, traits.sub_delegate, rng)]
    ), (next_task + t)


def _deeper(
    habits: Habits, level: Batch, depth: int, share: float, rng: np.random.Generator
) -> list[Batch]:
    """Profiles: workers that are sub-orchestrators delegate on, up to ``depth`` agents deep.

    A sub-orchestrator turns its step 2 (sometimes 3 too) into a delegation to one of its own
    habitual downstream agents (never back to itself or to whoever delegated to it).
    """
    pop = habits.pop
    out: list[Batch] = []
    for _ in range(depth - 2):
        if not len(level):
            break
        api = level.eclass == API
        subs = pop.team_size[level.ident] > 0
        step_ok = (level.step == 2) | ((level.step == 3) & (rng.random(len(level)) < 0.3))
        rows = np.flatnonzero(api & subs & step_ok & (rng.random(len(level)) < share))
        if not len(rows):
            break
        orch = level.ident[rows]
        slot = zipf_rank(rng.random(len(rows)), pop.team_size[orch])
        workers = pop.team_member(orch, slot)
        ok = (workers >= 0) & (workers != orch) & (workers != level.deleg[rows])
        rows, workers = rows[ok], workers[ok]
        if not len(rows):
            break
        sub = delegate(habits, level, rows, workers, rng)
        level = expand(habits, sub, rng)
        out.append(level)
    return out
