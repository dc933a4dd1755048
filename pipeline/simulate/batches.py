"""Columnar batches of not-yet-serialised events: one numpy array per field.

Behaviours, chains and scenarios all produce :class:`Batch` objects; the run loop concatenates
them per time slice, sorts by time and hands them to the encoder. Keeping events columnar until
the very end is what makes generation vectorised.

``camp`` (the campaign index, -1 for benign) is ground truth: the encoder feeds it to the label
book and never writes it into an event.

>>> b = Batch.new(3, time=np.array([30, 10, 20]), ident=np.array([1, 2, 3]))
>>> b.take(b.time_order()).time.tolist(), int(b.camp[0])
([10, 20, 30], -1)
>>> len(Batch.concat([b, Batch.empty()]))
3
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final, Self

import numpy as np

from pipeline.simulate.seeds import Array

__all__ = ["API", "AUTH", "Batch"]

AUTH: Final = 0  # OCSF Authentication (3002)
API: Final = 1  # OCSF API Activity (6003)

# field -> (dtype, default)
_SPEC: Final[dict[str, tuple[Any, int]]] = {
    "time": (np.int64, 0),  # ms since epoch
    "ident": (np.int32, -1),  # acting identity
    "eclass": (np.int8, API),  # event class: AUTH or API
    "activity": (np.int8, 2),  # OCSF activity_id
    "status": (np.int8, 1),  # 1 success, 2 failure
    "svc": (np.int16, -1),  # service (API: the op's service; AUTH: what was signed in to)
    "op": (np.int16, -1),  # operation (API only)
    "res": (np.int32, -1),  # resource, -1 none
    "peer": (np.int32, -1),  # delegated-to agent (a2a delegation calls)
    "bytes_in": (np.int64, 0),
    "bytes_out": (np.int64, 0),
    "geo": (np.int16, 0),  # place
    "asn": (np.int16, 0),  # network (asn table index)
    "ip": (np.uint32, 0),
    "mfa": (np.int8, -1),  # -1 absent, 0 false, 1 true
    "proto": (np.int8, -1),  # auth protocol, -1 absent
    "task": (np.int64, -1),  # task serial, -1 none
    "step": (np.int16, 0),  # agent step within its part of the task (1-based)
    "deleg": (np.int32, -1),  # delegated_by identity
    "cred_to": (np.int32, -1),  # credential issued_to identity, -1 no credential
    "cred_step": (np.int16, 0),  # step the credential was issued for
    "cred_exp": (np.int64, 0),  # credential expires_at (ms)
    "model": (np.int16, -1),  # model table index
    "env": (np.int8, -1),  # environment, -1 none
    "why": (np.int16, -1),  # rationale index, -1 none
    "cfg": (np.int8, 0),  # agent configuration changed: CONFIG_TOOLS | CONFIG_PROMPT bits
    "cpty": (np.int64, -1),  # counterparty of a write/send call (profiles only), -1 none
    "res_more": (np.int16, 0),  # further resources of res's block the call touches (scenarios)
    "camp": (np.int32, -1),  # ground truth: campaign index (never serialised)
}


@dataclass(slots=True, eq=False)
class Batch:
    """Events as parallel arrays (see the field comments in ``_SPEC``)."""

    time: Array
    ident: Array
    eclass: Array
    activity: Array
    status: Array
    svc: Array
    op: Array
    res: Array
    peer: Array
    bytes_in: Array
    bytes_out: Array
    geo: Array
    asn: Array
    ip: Array
    mfa: Array
    proto: Array
    task: Array
    step: Array
    deleg: Array
    cred_to: Array
    cred_step: Array
    cred_exp: Array
    model: Array
    env: Array
    why: Array
    cfg: Array
    cpty: Array
    res_more: Array
    camp: Array

    @classmethod
    def new(cls, n: int, **columns: Any) -> Self:
        """``n`` events: given columns (arrays or scalars) are cast, the rest take defaults."""
        unknown = set(columns) - set(_SPEC)
        if unknown:
            raise TypeError(f"unknown batch columns: {sorted(unknown)}")
        values: dict[str, Array] = {}
        for name, (dtype, default) in _SPEC.items():
            if name in columns:
                arr = np.asarray(columns[name])
                values[name] = (
                    np.full(n, arr, dtype=dtype) if arr.ndim == 0 else np.array(arr, dtype=dtype)
                )
            else:
                values[name] = np.full(n, default, dtype=dtype)
        return cls(**values)

    @classmethod
    def empty(cls) -> Self:
        return cls.new(0)

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        """One batch holding all events, in the given order (deterministic)."""
        parts = [b for b in batches if len(b)]
        if not parts:
            return Batch.empty()
        if len(parts) == 1:
            return parts[0]
        return Batch(
            **{f.name: np.concatenate([getattr(b, f.name) for b in parts]) for f in fields(Batch)}
        )

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def take(self, index: Array) -> Batch:
        """Rows selected by an index array or a boolean mask."""
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(Batch)})

    def time_order(self) -> Array:
        """Stable argsort by time: ties keep generation order, so output is deterministic."""
        return np.argsort(self.time, kind="stable")

    def set(self, mask: Array, **columns: Any) -> None:
        """Overwrite columns where ``mask`` is true (scenarios bend benign events this way)."""
        for name, value in columns.items():
            getattr(self, name)[mask] = value
