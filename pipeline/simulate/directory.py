"""Export the simulated population as an identity directory (what the IdP / agent registry knows).

One :class:`~pipeline.scores.directory.DirectoryEntry` per identity, in identity order:

* ``peer_group`` - ``human/<role>/team-NN``, ``service/<family>``, ``agent/<agent kind>``;
* ``sensitivity_ceiling`` - the identity's simulator ceiling, mapped onto the directory's
  rank scale through its OCSF ``confidentiality_id`` (the simulator ranks Private below
  Confidential; the directory puts both on rank 1);
* ``approved_digests`` - agents: the digest of the model they were registered with. A
  ``model_swap`` campaign later runs another build (same name and version, other digest), so
  the registered digest is always the original one;
* ``approved_tool_manifests`` / ``approved_system_prompts`` - agents: the hashes of the tool
  manifest and system prompt they were deployed with (``model_swap`` changes them);
* ``home_environment`` - services and agents: the environment they are deployed in.
* ``delegators`` - agents: the owner that hands a root agent its tasks, and the orchestrators
  whose team a pooled worker belongs to (``lateral_movement`` delegates outside these).

>>> import tempfile
>>> from pathlib import Path
>>> from pipeline.scores.directory import Directory
>>> from pipeline.simulate.profiles import build_population
>>> pop = build_population(50, seed=3)
>>> with tempfile.TemporaryDirectory() as tmp:
...     n = write_directory(pop, Path(tmp) / "directory.jsonl")
...     d = Directory.load(Path(tmp) / "directory.jsonl")
>>> n, len(d), d.lookup(pop.uid(pop.n - 1)).kind
(50, 50, 'agent')
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.events.schemas import CONFIDENTIALITY_RANK
from pipeline.scores.directory import Directory, DirectoryEntry, write_entries
from pipeline.simulate.catalogue import (
    AGENT,
    HUMAN,
    KINDS,
    RANK_CONFIDENTIALITY,
    agent_config_hash,
    catalogue,
)
from pipeline.simulate.population import Population

__all__ = ["directory_entries", "write_directory"]

# Simulator rank (0..5) -> directory rank (0..4), via the OCSF id both sides agree on.
_CEILING: tuple[int, ...] = tuple(CONFIDENTIALITY_RANK[c] for c in RANK_CONFIDENTIALITY)


def directory_entries(population: Population) -> Iterator[DirectoryEntry]:
    """The directory entry of every identity, in identity order.

    >>> from pipeline.simulate.profiles import build_population
    >>> pop = build_population(20, seed=1)
    >>> e = next(directory_entries(pop))
    >>> e.kind, e.peer_group.startswith("human/"), e.home_environment
    ('human', True, None)
    """
    pop, cat = population, catalogue()
    n = pop.n
    idx = range(n)
    uids = [pop.uid(i) for i in idx]
    kinds = pop.kind.tolist()
    groups = pop.group.tolist()
    teams = pop.team.tolist()
    ceilings = pop.ceiling.tolist()
    envs = pop.env.tolist()
    models = pop.model.tolist()
    delegators: dict[int, list[str]] = {}
    owners = pop.owner.tolist()
    for i in idx:
        if owners[i] >= 0:
            delegators.setdefault(i, []).append(uids[owners[i]])
    for o in pop.orchestrators.tolist():
        slots = np.arange(int(pop.team_size[o]))
        for m in pop.team_member(np.full(len(slots), o), slots).tolist():
            if m >= 0 and uids[o] not in delegators.setdefault(m, []):
                delegators[m].append(uids[o])
    for i in idx:
        kind = kinds[i]
        group = cat.group_name[groups[i]]
        if kind == HUMAN:
            peer = f"human/{group}/team-{teams[i]:02d}"
        else:
            peer = f"{KINDS[kind]}/{group}"
        agent = kind == AGENT and models[i] >= 0
        digests = (cat.model_digest[models[i]],) if agent else ()
        yield DirectoryEntry(
            uid=uids[i],
            kind=KINDS[kind],
            peer_group=peer,
            sensitivity_ceiling=_CEILING[ceilings[i]],
            approved_digests=digests,
            home_environment=cat.env_name[envs[i]] if envs[i] >= 0 else None,
            delegators=tuple(sorted(delegators.get(i, ()))) if kind == AGENT else (),
            approved_tool_manifests=(agent_config_hash(uids[i], "tools"),) if agent else (),
            approved_system_prompts=(agent_config_hash(uids[i], "prompt"),) if agent else (),
        )


def write_directory(population: Population, path: Path | str) -> int:
    """Write the population's directory as JSONL to ``path``; returns the number of identities."""
    return write_entries(directory_entries(population), path)


def population_directory(identities: int, seed: int, profile: str = "default") -> Directory:
    """The directory a worker would load for ``custos simulate --identities N --seed S``
    (``--profile P``)."""
    from pipeline.simulate.profiles import build_population

    return Directory(directory_entries(build_population(identities, seed=seed, profile=profile)))
