"""The agent-model registry: which model builds agents may run, where they came from, who vouched.

A *build* is one ``(name, version, digest)``: the model name and version an agent reports in
``unmapped.model`` and the ``sha256:`` digest of the weights / image it actually runs. Each
registered build records its provenance and approval:

* ``trained_by`` - who trained or supplied it (a team, a vendor);
* ``lineage`` - the training data it came from: a free-text description or a small mapping of
  strings (``{"data": "...", "cutoff": "2024-04", "license": "..."}``);
* ``status`` - ``approved`` (default) or ``revoked``; ``approved_by``; ``revoked_reason`` and
  ``revoked_by`` once revoked.

The registry is loaded from a YAML file such as ``models/examples/agent-models.yaml``
(:func:`load_agent_model_registry`;
the older ``name``/``version``/``digest``-only entries still load: they are approved builds
without provenance) and changed at run time by :class:`AgentModelUpdate` messages from a control
topic: :func:`decode_update` validates one message, :meth:`AgentModelRegistry.apply` applies it
and says what changed. Applying the same update twice changes nothing the second time, so
replaying a control topic from its start is safe.

The ``model_provenance`` Zero Trust rule (:mod:`pipeline.scores.rules`) asks
:meth:`AgentModelRegistry.status` (``approved`` / ``revoked`` / ``unregistered``) and
:meth:`AgentModelRegistry.digests_for` per event.

>>> d = "sha256:" + "a" * 64
>>> reg = AgentModelRegistry([RegisteredModel("m", "1", d, trained_by="ml-team")])
>>> reg.status(d), reg.status("sha256:" + "b" * 64)
('approved', 'unregistered')
>>> change = reg.apply(decode_update(
...     b'{"action": "revoke", "name": "m", "version": "1", "digest": "' + d.encode()
...     + b'", "reason": "trained on leaked data", "revoked_by": "security"}'))
>>> change.changed, change.before, change.after, reg.status(d)
(True, 'approved', 'revoked', 'revoked')
>>> reg.apply(decode_update(encode_update(AgentModelUpdate(
...     action="revoke", name="m", version="1", digest=d, reason="trained on leaked data"
... )))).changed
False
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
import yaml
from joserfc.jwk import KeySet
from msgspec import Meta

from pipeline.credentials.tokens import (
    SignedMessageError,
    SigningKey,
    sign_compact,
    verify_compact,
)
from pipeline.errors import CustosError
from pipeline.events.schemas import ModelDigest

__all__ = [
    "REASONS",
    "AgentModelChange",
    "AgentModelRegistry",
    "AgentModelUpdate",
    "DigestStatus",
    "InvalidAgentModelUpdate",
    "Lineage",
    "ModelStatus",
    "RegisteredModel",
    "UpdateAction",
    "decode_update",
    "encode_update",
    "load_agent_model_registry",
    "sign_update",
    "verify_update",
]

ModelStatus = Literal["approved", "revoked"]
#: What the registry says about a digest: ``revoked`` wins over ``approved`` when one digest is
#: registered under several builds (a revoked artefact is bad whatever it is called).
DigestStatus = Literal["approved", "revoked", "unregistered"]
UpdateAction = Literal["register", "approve", "revoke"]
#: Training-data lineage: a description, or a small mapping of strings (YAML reads every scalar
#: as a string, so the file and the control topic agree on the type).
Lineage = str | dict[str, str]

#: Stable reason codes of :class:`InvalidAgentModelUpdate` (counted per reason, like dead letters).
REASONS: Final[tuple[str, ...]] = ("oversized", "invalid_json", "missing_field", "invalid_value",
                                    "unsigned", "bad_signature", "malformed")  # fmt: skip
#: JWS ``typ`` of a signed update on the control topic (see :func:`sign_update`).
UPDATE_TYP: Final = "custos-agent-model-update+jws"
MAX_UPDATE_BYTES: Final = 65_536

# Bounds on control messages: they are small, human-written records, never bulk data.
_Label = Annotated[str, Meta(min_length=1, max_length=256)]
_Text = Annotated[str, Meta(min_length=1, max_length=4096)]
_LineageIn = _Text | Annotated[dict[_Label, _Text], Meta(min_length=1, max_length=32)]
_DETAIL_MAX: Final = 300


class RegisteredModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One model build with its provenance and approval (also the YAML entry format).

    >>> RegisteredModel("m", "1", "sha256:" + "0" * 64).status
    'approved'
    """

    name: str
    version: str
    digest: ModelDigest
    trained_by: str | None = None
    lineage: Lineage | None = None
    status: ModelStatus = "approved"
    approved_by: str | None = None
    revoked_reason: str | None = None
    revoked_by: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.version, self.digest)


class _RegistryFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    models: tuple[RegisteredModel, ...] = ()


class AgentModelUpdate(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One control-topic message (JSON object) changing one build of the registry.

    * ``register`` - add a build (approved) or update its provenance; never reinstates a revoked
      build (that takes an explicit ``approve``).
    * ``approve`` - approve a build: adds it, or reinstates a revoked one (clears the reason).
    * ``revoke`` - revoke a build; ``reason`` is required. A build never registered is added as
      revoked (deny-listing a digest known to be bad).

    ``trained_by`` / ``lineage`` / ``approved_by`` / ``revoked_by`` left out keep what the
    registry already has. Unknown fields are an error: a misspelt ``reason`` must not vanish
    from a security decision's record.

    >>> AgentModelUpdate(action="revoke", name="m", version="1", digest="sha256:" + "0" * 64)
    Traceback (most recent call last):
    ...
    ValueError: revoke needs a reason
    """

    action: UpdateAction
    name: _Label
    version: _Label
    digest: ModelDigest
    trained_by: _Label | None = None
    lineage: _LineageIn | None = None
    approved_by: _Label | None = None
    revoked_by: _Label | None = None
    reason: _Text | None = None

    def __post_init__(self) -> None:
        # Raised inside msgspec's decoder, a ValueError becomes a ValidationError with its path.
        if self.action == "revoke":
            if self.reason is None:
                raise ValueError("revoke needs a reason")
            if self.approved_by is not None:
                raise ValueError("approved_by is for register / approve, not revoke")
        elif self.reason is not None or self.revoked_by is not None:
            raise ValueError(f"reason and revoked_by are for revoke, not {self.action}")

    def key(self) -> bytes:
        """Suggested Kafka message key: the build. Compaction then keeps its latest update.

        >>> AgentModelUpdate(action="register", name="m", version="1",
        ...                  digest="sha256:" + "0" * 64).key()[:14]
        b'm@1@sha256:000'
        """
        return f"{self.name}@{self.version}@{self.digest}".encode()


class AgentModelChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """What :meth:`AgentModelRegistry.apply` did: ``changed`` False means the update was a no-op.

    ``before`` is None when the build was not registered; ``entry`` is the build as it now is.
    """

    action: UpdateAction
    name: str
    version: str
    digest: str
    changed: bool
    before: ModelStatus | None
    after: ModelStatus
    detail: str
    entry: RegisteredModel


class InvalidAgentModelUpdate(CustosError):
    """A control message that is not a valid :class:`AgentModelUpdate`; nothing was applied.

    ``reason`` is one of :data:`REASONS`; ``detail`` is for humans (at most 300 characters).
    """

    def __init__(self, reason: str, detail: str, **context: object) -> None:
        super().__init__(f"{reason}: {detail}", **context)  # type: ignore[arg-type]
        self.reason = reason
        self.detail = detail


_DECODE_UPDATE: Final = msgspec.json.Decoder(AgentModelUpdate).decode
_ENCODE: Final = msgspec.json.Encoder().encode


def _detail(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def decode_update(data: bytes, *, max_bytes: int = MAX_UPDATE_BYTES) -> AgentModelUpdate:
    """Validate one control message; raises :class:`InvalidAgentModelUpdate` and nothing else.

    >>> try:
    ...     decode_update(b'{"action": "approve", "name": "m", "version": "1", "digest": "md5:0"}')
    ... except InvalidAgentModelUpdate as e:
    ...     print(e.reason, "sha256" in e.detail)
    invalid_value True
    >>> try:
    ...     decode_update(b'{"action": "register", "name": "m"}')
    ... except InvalidAgentModelUpdate as e:
    ...     print(e.reason)
    missing_field
    """
    try:
        size = len(data)
    except TypeError:  # a tombstone
        raise InvalidAgentModelUpdate("invalid_json", "message has no value (tombstone?)") from None
    if size > max_bytes:
        raise InvalidAgentModelUpdate("oversized", f"{size} bytes > max {max_bytes}")
    try:
        return _DECODE_UPDATE(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason = "missing_field" if "missing required field" in text else "invalid_value"
        raise InvalidAgentModelUpdate(reason, _detail(text)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidAgentModelUpdate("invalid_json", _detail(str(exc))) from None
    except RecursionError:
        raise InvalidAgentModelUpdate("invalid_json", "JSON nested too deeply") from None


def encode_update(update: AgentModelUpdate) -> bytes:
    """Compact JSON of an update (what a producer puts on the control topic).

    >>> encode_update(AgentModelUpdate(action="approve", name="m", version="1",
    ...                                digest="sha256:" + "0" * 64))[:38]
    b'{"action":"approve","name":"m","versio'
    """
    return _ENCODE(update)


def sign_update(update: AgentModelUpdate, key: SigningKey) -> bytes:
    """The update as the control topic carries it: a compact JWS by the command key.

    Approving or revoking a model is a security decision: a worker applies only updates a
    trusted key (the command JWKS, as for analysts' quarantine decisions) signed.
    """
    return sign_compact(encode_update(update), key, UPDATE_TYP)


def verify_update(data: bytes, keys: KeySet) -> AgentModelUpdate:
    """:func:`decode_update` of a message a trusted key signed; else InvalidAgentModelUpdate.

    >>> from pipeline.credentials.tokens import SigningKey
    >>> k = SigningKey.generate()
    >>> u = AgentModelUpdate(action="approve", name="m", version="1", digest="sha256:" + "0" * 64)
    >>> verify_update(sign_update(u, k), k.public_keys()) == u
    True
    >>> verify_update(encode_update(u), k.public_keys())
    Traceback (most recent call last):
    ...
    pipeline.scores.agent_models.InvalidAgentModelUpdate: unsigned: bare JSON: only signed messages
    """
    try:
        payload = verify_compact(data, keys, UPDATE_TYP)
    except SignedMessageError as exc:
        raise InvalidAgentModelUpdate(exc.reason, exc.detail) from None
    return decode_update(payload)


class AgentModelRegistry:
    """Registered model builds, indexed for the per-event checks.

    Indexes are rebuilt on every change (registries hold tens to thousands of builds; changes
    are rare) and swapped in by plain attribute assignment, so a reader never sees a half-made
    index. Two entries for one build that disagree are an error.

    >>> d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    >>> reg = AgentModelRegistry([RegisteredModel("m", "1", d1),
    ...                      RegisteredModel("m", "1", d2, status="revoked")])
    >>> reg.digests_for("m", "1") == frozenset({d1}), reg.digests_for("m", "2"), len(reg)
    (True, None, 2)
    >>> reg.status(d2), [b.revoked_reason for b in reg.builds(d2)]
    ('revoked', [None])
    """

    __slots__ = ("_by_model", "_entries", "_status")

    def __init__(self, models: Iterable[RegisteredModel] = ()) -> None:
        self._entries: dict[tuple[str, str, str], RegisteredModel] = {}
        for m in models:
            old = self._entries.get(m.key)
            if old is not None and old != m:
                raise ValueError(f"conflicting entries for {m.name} {m.version} {m.digest}")
            self._entries[m.key] = m
        self._by_model: dict[tuple[str, str], frozenset[str]] = {}
        self._status: dict[str, DigestStatus] = {}
        self._reindex()

    def _reindex(self) -> None:
        approved: dict[tuple[str, str], set[str]] = {}
        status: dict[str, DigestStatus] = {}
        for m in self._entries.values():
            digests = approved.setdefault((m.name, m.version), set())
            if m.status == "revoked":
                status[m.digest] = "revoked"
            else:
                digests.add(m.digest)
                status.setdefault(m.digest, "approved")
        self._by_model = {k: frozenset(v) for k, v in approved.items()}
        self._status = status

    # ---- lookups (the rule's hot path) -------------------------------------------------------
    def status(self, digest: str) -> DigestStatus:
        """``revoked`` if any build with this digest is revoked, else ``approved`` if one is
        registered, else ``unregistered``."""
        return self._status.get(digest, "unregistered")

    def digests_for(self, name: str | None, version: str | None) -> frozenset[str] | None:
        """Approved digests of that model name and version (empty when all its builds are
        revoked), or None when the registry has no build of it at all."""
        if name is None or version is None:
            return None
        return self._by_model.get((name, version))

    def builds(self, digest: str) -> tuple[RegisteredModel, ...]:
        """Every registered build with this digest (usually one)."""
        if digest not in self._status:
            return ()
        return tuple(m for m in self._entries.values() if m.digest == digest)

    def get(self, name: str, version: str, digest: str) -> RegisteredModel | None:
        return self._entries.get((name, version, digest))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[RegisteredModel]:
        return iter(list(self._entries.values()))

    # ---- changes ---------------------------------------------------------------------------------
    def apply_signed(self, values: Iterable[bytes], keys: KeySet) -> int:
        """Apply, in order, the updates among ``values`` that a key of ``keys`` signed (what
        the workers apply); how many were refused (unsigned, untrusted or invalid)."""
        refused = 0
        for value in values:
            try:
                self.apply(verify_update(value, keys))
            except InvalidAgentModelUpdate:
                refused += 1
        return refused

    def apply(self, update: AgentModelUpdate) -> AgentModelChange:
        """Apply one control message; idempotent (the same update again reports no change).

        >>> reg, d = AgentModelRegistry(), "sha256:" + "c" * 64
        >>> up = AgentModelUpdate(action="register", name="m", version="1", digest=d,
        ...                       trained_by="ml-team", lineage="internal tickets 2023")
        >>> first, again = reg.apply(up), reg.apply(up)
        >>> first.changed, first.detail
        (True, 'registered m 1 (approved)')
        >>> again.changed, again.detail
        (False, 'm 1 already registered (approved): nothing changed')
        """
        key = (update.name, update.version, update.digest)
        old = self._entries.get(key)
        base = old or RegisteredModel(update.name, update.version, update.digest)
        fields: dict[str, object] = {}
        if update.trained_by is not None:
            fields["trained_by"] = update.trained_by
        if update.lineage is not None:
            fields["lineage"] = update.lineage
        if update.action == "revoke":
            fields.update(status="revoked", revoked_reason=update.reason)
            if update.revoked_by is not None:
                fields["revoked_by"] = update.revoked_by
        else:
            if update.approved_by is not None:
                fields["approved_by"] = update.approved_by
            if update.action == "approve" or old is None:
                fields.update(status="approved", revoked_reason=None, revoked_by=None)
        new = msgspec.structs.replace(base, **fields)
        changed = new != old
        detail = (
            _describe(update, old, new)
            if changed
            else (
                f"{update.name} {update.version} already "
                + ("registered" if update.action == "register" else new.status)
                + (f" ({new.status})" if update.action == "register" else "")
                + ": nothing changed"
            )
        )
        if changed:
            self._entries[key] = new
            self._reindex()
        return AgentModelChange(
            update.action,
            update.name,
            update.version,
            update.digest,
            changed,
            old.status if old is not None else None,
            new.status,
            _detail(detail),
            new,
        )


def _describe(update: AgentModelUpdate, old: RegisteredModel | None, new: RegisteredModel) -> str:
    """One line for logs and the audit trail: what an effective update did."""
    what = f"{update.name} {update.version}"
    if update.action == "revoke":
        if old is None:
            return f"revoked {what}: {update.reason} (build was not registered)"
        if old.status == "revoked":
            return f"{what} revocation updated: {update.reason}"
        return f"revoked {what}: {update.reason}"
    if old is None:
        return f"{'registered' if update.action == 'register' else 'approved'} {what} (approved)"
    if update.action == "approve" and old.status == "revoked":
        return f"reinstated {what} (approved)"
    if new.status == "revoked":
        return f"{what}: provenance updated; stays revoked (approve it to reinstate)"
    return f"{what}: provenance updated ({new.status})"


def load_agent_model_registry(path: Path | str) -> AgentModelRegistry:
    """Read a registry YAML: ``models:`` (or a bare list) of registered builds.

    Every scalar is read as a string (YAML's BaseLoader), so ``version: 3.10`` stays "3.10".
    A malformed file raises ``ValueError``.

    >>> from pipeline.config import REPO_ROOT
    >>> reg = load_agent_model_registry(REPO_ROOT / "models" / "examples" / "agent-models.yaml")
    >>> len(reg) >= 8, all(m.trained_by and m.lineage for m in reg)
    (True, True)
    """
    with Path(path).open(encoding="utf-8") as fh:
        raw = yaml.load(fh, Loader=yaml.BaseLoader)  # BaseLoader: strings only, builds no objects
    if isinstance(raw, list):
        raw = {"models": raw}
    try:
        parsed = msgspec.convert(raw or {}, _RegistryFile)
        return AgentModelRegistry(parsed.models)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
