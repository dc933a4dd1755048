"""The identity directory: what the IdP and agent registry say about each identity.

The directory is exported by an identity provider / agent registry as JSON Lines, one object per
identity (``docs/EVENTS.md`` describes events; this module is the directory's contract)::

    {"uid": "agt-0000321", "kind": "agent", "peer_group": "agent/coding",
     "sensitivity_ceiling": 1, "approved_digests": ["sha256:..."], "home_environment": "prod-eu"}

Only ``uid`` and ``kind`` are required. Fields:

* ``kind`` - ``human`` | ``service`` | ``agent``.
* ``peer_group`` - role / team (humans), service family, agent kind: who should look alike.
* ``sensitivity_ceiling`` - highest sensitivity rank the identity may touch, on the scale of
  :data:`~pipeline.events.schemas.RANK_NAMES` (0 Not Confidential, 1 Confidential / Private,
  2 Restricted, 3 Secret, 4 Top Secret); OCSF ``confidentiality_id`` values map onto it with
  :data:`~pipeline.events.schemas.CONFIDENTIALITY_RANK`.
* ``approved_digests`` - model digests an agent is registered to run (``sha256:<64 hex>``).
* ``approved_tool_manifests`` / ``approved_system_prompts`` - hashes (``sha256:<64 hex>``) of
  the tool manifests / system prompts an agent is approved to run with; empty: the
  ``agent_config_drift`` rule pins the first one seen instead.
* ``home_environment`` - where an agent or service is deployed, e.g. ``prod-eu``.
* ``delegators`` - identities allowed to hand this agent tasks (its owner, the orchestrators
  whose team it belongs to: the agent registry's A2A policy). Empty: not enforced.

Identities missing from the directory are allowed: rules then fall back to per-kind defaults and
to what they learn per identity.

The agent-model registry (e.g. ``models/examples/agent-models.yaml``) is not part of the
directory: it lives in :mod:`pipeline.scores.agent_models`.

>>> d = Directory([DirectoryEntry("agt-1", "agent", "agent/coding", 1, ("sha256:" + "a" * 64,),
...                               "prod-eu")])
>>> d.lookup("agt-1").home_environment, d.lookup("nobody")
('prod-eu', None)
>>> from pipeline.events.schemas import CONFIDENTIALITY_RANK, RANK_NAMES
>>> CONFIDENTIALITY_RANK[6], RANK_NAMES[CONFIDENTIALITY_RANK[6]]
(2, 'Restricted')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from pipeline.events.schemas import (
    RANK_NAMES,
    IdentityKind,
    ModelDigest,
    Sha256Digest,
)

__all__ = [
    "Directory",
    "DirectoryEntry",
    "write_entries",
]

#: Sensitivity ranks, lowest first: a ceiling is "at most this rank".
Rank = Annotated[int, Meta(ge=0, le=len(RANK_NAMES) - 1)]


class DirectoryEntry(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One identity as the directory knows it (also the JSONL line format).

    >>> DirectoryEntry("usr-1", "human", "human/sales/team-02", 1).sensitivity_ceiling
    1
    """

    uid: str
    kind: IdentityKind
    peer_group: str | None = None
    sensitivity_ceiling: Rank | None = None
    approved_digests: tuple[ModelDigest, ...] = ()
    home_environment: str | None = None
    delegators: tuple[str, ...] = ()
    approved_tool_manifests: tuple[Sha256Digest, ...] = ()
    approved_system_prompts: tuple[Sha256Digest, ...] = ()


class Directory:
    """Identity uid -> :class:`DirectoryEntry`, in memory.

    One dict of frozen structs; repeated strings (peer groups, environments, digest tuples) are
    shared, so a million identities cost roughly 250 bytes each. Duplicate uids are an error:
    an export that lists an identity twice is ambiguous.

    >>> d = Directory([DirectoryEntry("svc-1", "service", home_environment="prod-us")])
    >>> len(d), "svc-1" in d, d.lookup("svc-1").kind
    (1, True, 'service')
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[DirectoryEntry] = ()) -> None:
        self._entries: dict[str, DirectoryEntry] = {}
        shared: dict[object, object] = {}  # value -> one canonical object (interning)
        for entry in entries:
            self._add(entry, shared)

    def _add(self, entry: DirectoryEntry, shared: dict[object, object]) -> None:
        if entry.uid in self._entries:
            raise ValueError(f"duplicate directory entry for {entry.uid!r}")
        # setdefault returns the first equal object seen: thousands of identities share one.
        pg = shared.setdefault(entry.peer_group, entry.peer_group)
        env = shared.setdefault(entry.home_environment, entry.home_environment)
        digests = shared.setdefault(entry.approved_digests, entry.approved_digests)
        delegators = shared.setdefault(entry.delegators, entry.delegators)
        tools = shared.setdefault(entry.approved_tool_manifests, entry.approved_tool_manifests)
        prompts = shared.setdefault(entry.approved_system_prompts, entry.approved_system_prompts)
        if (
            pg is not entry.peer_group
            or env is not entry.home_environment
            or digests is not entry.approved_digests
            or delegators is not entry.delegators
            or tools is not entry.approved_tool_manifests
            or prompts is not entry.approved_system_prompts
        ):
            entry = msgspec.structs.replace(
                entry,
                peer_group=pg,
                home_environment=env,
                approved_digests=digests,
                delegators=delegators,
                approved_tool_manifests=tools,
                approved_system_prompts=prompts,
            )
        self._entries[entry.uid] = entry

    @classmethod
    def load(cls, path: Path | str) -> Directory:
        """Read a JSONL export (blank lines skipped); a bad line raises ``ValueError``.

        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = Path(tmp) / "dir.jsonl"
        ...     _ = p.write_text('{"uid": "usr-1", "kind": "human", "sensitivity_ceiling": 2}\\n')
        ...     Directory.load(p).lookup("usr-1").sensitivity_ceiling
        2
        """
        decode = msgspec.json.Decoder(DirectoryEntry).decode
        directory = cls()
        shared: dict[object, object] = {}
        with Path(path).open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = decode(line)
                except msgspec.MsgspecError as exc:
                    raise ValueError(f"{path}:{n}: {exc}") from None
                try:
                    directory._add(entry, shared)
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: {exc}") from None
        return directory

    def lookup(self, uid: str) -> DirectoryEntry | None:
        """The entry of ``uid``, or None for an identity the directory does not know."""
        return self._entries.get(uid)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __iter__(self) -> Iterator[DirectoryEntry]:
        return iter(self._entries.values())


def write_entries(entries: Iterable[DirectoryEntry], path: Path | str) -> int:
    """Write entries as directory JSONL (defaults omitted); returns how many were written.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "d.jsonl"
    ...     write_entries([DirectoryEntry("usr-1", "human")], p), p.read_text()
    (1, '{"uid":"usr-1","kind":"human"}\\n')
    """
    encode = msgspec.json.Encoder().encode
    n = 0
    with Path(path).open("wb") as fh:
        for entry in entries:
            fh.write(encode(entry))
            fh.write(b"\n")
            n += 1
    return n
