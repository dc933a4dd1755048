"""Event → features: the one place that says what detection looks at, and how it is computed.

:func:`extract` is pure (the same :class:`~pipeline.events.schemas.Event` always gives the same
:class:`Features`, in any process) and cheap (≈3 µs); :func:`extract_rows` is the same for a
detection round's events at once, flat (no object per event), and runs for every event in the
worker and in offline replay. Bump :data:`FEATURE_SCHEMA_VERSION` whenever a feature, its
order or its transform changes: baselines learned on another version are not comparable.

Numeric features (:data:`NUMERIC`, in this order, in ``Features.numeric``):

=============  ============================================  =====================================
feature        source field                                  transform
=============  ============================================  =====================================
bytes_out      ``traffic.bytes_out``                         ``log1p(bytes)``; absent → 0
bytes_in       ``traffic.bytes_in``                          ``log1p(bytes)``; absent → 0
failure        ``status_id``                                 1.0 if 2 (Failure) else 0.0
no_mfa         ``is_mfa`` (class 3002 only)                  1.0 if ``is_mfa`` is false, else 0.0
sensitivity    ``resources[].data_classification``           max rank of ``confidentiality_id``:
                                                             1 Not Confidential → 0,
                                                             2 Confidential / 5 Private → 1,
                                                             6 Restricted → 2, 3 Secret → 3,
                                                             4 Top Secret → 4, 0 / 99 / none → 0
n_resources    ``resources[]``                               count
chain_depth    ``unmapped.delegated_by``                     1.0 if set else 0.0
=============  ============================================  =====================================

Time: ``hour_of_week`` = hours since Monday 00:00 UTC (0‥167) of ``time``; ``time_ms`` as is.

Categorical features (:data:`CATEGORICAL`, in this order, in ``cat_hashes`` / ``cat_values``):

=============  ============================================  =====================================
feature        source field                                  raw value kept
=============  ============================================  =====================================
country        ``src_endpoint.location.country``             ISO code, e.g. ``DE``
asn            ``src_endpoint.autonomous_system.number``     decimal string, e.g. ``3320``
ip_prefix      ``src_endpoint.ip``                           ``/24`` of IPv4, ``/48`` of IPv6
                                                             (IPv4-mapped IPv6 → IPv4 ``/24``);
                                                             unparsable → absent
service        ``service.name`` / ``api.service.name``       as is
operation      ``api.operation``                             as is
resource       ``resources[].uid``                           uid of the most sensitive resource
                                                             (the first one on a tie)
delegator      ``unmapped.delegated_by``                     as is
model          ``unmapped.model.digest``                     as is
environment    ``unmapped.environment``                      as is
auth_protocol  ``auth_protocol``                             as is
counterparty   ``resources[].uid`` of a call that changes    the first resource that names a party
               or sends something (``activity_id`` 1 Create, (type account / email / user /
               3 Update, 4 Delete)                           payee / contact / member / phone...,
                                                             or uid ``iban:``, ``mailto:``,
                                                             ``user:``, ...): payee, recipient;
                                                             the others (up to 3) in
                                                             ``parties``: every one is checked
combo          ``api.operation`` x ``resources[].type`` x    ``operation|type|rank`` of the most
               sensitivity rank                              sensitive resource: rare
                                                             combinations of familiar parts
=============  ============================================  =====================================

Aggregation keys (not features themselves; :mod:`pipeline.baselines.learning` accumulates per key):
``task`` = stable 32-bit hash of ``actor.session.uid``, else ``unmapped.credential.task_uid``
(0 = none), and ``volume`` = ``bytes_in + bytes_out`` (raw bytes).

Each categorical value is hashed to a stable unsigned 32-bit integer,
``zlib.crc32(b"<feature>\\x00<value>")`` (a crc of 0 is mapped to 1), so the hash is the same in
every process and version of Python; **0 means absent** (``None`` or the empty string). The raw
string is kept alongside, for explanations only.

``mfa`` (not in the numeric vector) is the MFA outcome for baselines to learn how often an
identity uses MFA: 1 used, 0 not used, -1 unknown / not an authentication event.

>>> from pipeline.events.schemas import Event
>>> ev = Event(uid="e-1", class_uid=3002, activity_id=1, time_ms=1_767_225_600_000,
...            identity_uid="alice", identity_kind="human", is_mfa=False,
...            country="DE", src_ip="203.0.113.7", bytes_out=999)
>>> f = extract(ev)
>>> f.hour_of_week, f.numeric[NUMERIC.index("no_mfa")], round(f.numeric[0], 3)
(72, 1.0, 6.908)
>>> f.cat_values[:3], f.cat_hashes[CATEGORICAL.index("operation")]
(('DE', None, '203.0.113.0/24'), 0)
"""

from __future__ import annotations

import ipaddress
import math
import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

import msgspec

from pipeline.events.schemas import CLASS_AUTHENTICATION, Event

__all__ = [
    "CATEGORICAL",
    "CATEGORICAL_INDEX",
    "FEATURE_SCHEMA_VERSION",
    "NUMERIC",
    "NUMERIC_INDEX",
    "ROW_FLOATS",
    "ROW_INTS",
    "SENSITIVITY_NAMES",
    "FeatureRows",
    "Features",
    "cat_hash",
    "extract",
    "extract_rows",
    "hour_of_week",
    "ip_prefix",
    "sensitivity_rank",
]

FEATURE_SCHEMA_VERSION: Final = 4

NUMERIC: Final[tuple[str, ...]] = (
    "bytes_out",
    "bytes_in",
    "failure",
    "no_mfa",
    "sensitivity",
    "n_resources",
    "chain_depth",
)
NUMERIC_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(NUMERIC)}

CATEGORICAL: Final[tuple[str, ...]] = (
    "country",
    "asn",
    "ip_prefix",
    "service",
    "operation",
    "resource",
    "delegator",
    "model",
    "environment",
    "auth_protocol",
    "counterparty",
    "combo",
)
CATEGORICAL_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(CATEGORICAL)}

#: Human names of the sensitivity ranks 0‥4, for explanations.
SENSITIVITY_NAMES: Final[tuple[str, ...]] = (
    "Not Confidential",
    "Confidential",
    "Restricted",
    "Secret",
    "Top Secret",
)

# OCSF confidentiality_id → rank (ordered by how much harm a leak does). Unknown/Other → 0.
_RANK: Final[dict[int | None, int]] = {1: 0, 2: 1, 5: 1, 6: 2, 3: 3, 4: 4}

_HOUR_MS: Final = 3_600_000
_EPOCH_HOW: Final = 72  # 1970-01-01 was a Thursday: 3 days x 24 h after Monday 00:00
_FAILURE: Final = 2

# crc32 of "<name>\x00" once: crc32(value, start) then equals crc32(b"<name>\x00" + value).
_SEED: Final[tuple[int, ...]] = tuple(zlib.crc32(n.encode() + b"\x00") for n in CATEGORICAL)
(
    _S_COUNTRY,
    _S_ASN,
    _S_IP,
    _S_SERVICE,
    _S_OPERATION,
    _S_RESOURCE,
    _S_DELEGATOR,
    _S_MODEL,
    _S_ENV,
    _S_AUTH,
    _S_COUNTERPARTY,
    _S_COMBO,
) = _SEED
_S_TASK: Final = zlib.crc32(b"task\x00")
_WRITES: Final = frozenset({1, 3, 4})  # OCSF API Activity: Create, Update, Delete


class Features(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """The features of one event; see the module docstring for each one's definition.

    ``numeric`` follows :data:`NUMERIC`; ``cat_hashes`` and ``cat_values`` follow
    :data:`CATEGORICAL` (hash 0 / value ``None`` = absent). Encodes as a compact array.

    >>> f = Features("bob", "human", 0, 72, (0.0,) * 7, (0,) * 12, (None,) * 12, "e-1", 0)
    >>> msgspec.msgpack.decode(msgspec.msgpack.encode(f), type=Features) == f
    True
    """

    identity_uid: str
    identity_kind: str
    time_ms: int
    hour_of_week: int
    numeric: tuple[float, ...]
    cat_hashes: tuple[int, ...]
    cat_values: tuple[str | None, ...]
    event_uid: str
    sensitivity_rank: int
    mfa: int = -1  # 1 MFA used, 0 not used, -1 unknown / not an authentication
    task: int = 0  # hash of the session / credential task (0 = none): per-task aggregation
    volume: float = 0.0  # bytes_in + bytes_out, raw
    # A write's further parties (``counterparty`` holds the first; a payment names the payer's
    # own account and the payee, in either order): each is checked for novelty.
    parties: tuple[str, ...] = ()
    party_hashes: tuple[int, ...] = ()


def cat_hash(feature: str, value: str | None) -> int:
    """The stable 32-bit hash of one categorical value; 0 for absent (``None`` or empty).

    >>> cat_hash("country", "DE") == zlib.crc32(b"country\\x00DE")
    True
    >>> cat_hash("country", None), cat_hash("country", "")
    (0, 0)
    """
    if not value:
        return 0
    return zlib.crc32(f"{feature}\x00{value}".encode()) or 1


def hour_of_week(time_ms: int) -> int:
    """Hours since Monday 00:00 UTC, 0‥167.

    >>> hour_of_week(0)  # Thursday 1970-01-01 00:00 UTC
    72
    >>> hour_of_week(4 * 86_400_000)  # Monday 1970-01-05
    0
    """
    return (time_ms // _HOUR_MS + _EPOCH_HOW) % 168


def sensitivity_rank(confidentiality_id: int | None) -> int:
    """Rank 0‥4 of an OCSF ``confidentiality_id`` (see the module table).

    >>> [sensitivity_rank(c) for c in (None, 0, 1, 2, 5, 6, 3, 4, 99)]
    [0, 0, 0, 1, 1, 2, 3, 4, 0]
    """
    return _RANK.get(confidentiality_id, 0)


@lru_cache(maxsize=1 << 16)  # an identity reuses few addresses: parse each one once
def ip_prefix(ip: str) -> str | None:
    """The ``/24`` of an IPv4 or the ``/48`` of an IPv6 address; ``None`` if not an address.

    >>> ip_prefix("203.0.113.7"), ip_prefix("2001:db8:abcd:12::1"), ip_prefix("::ffff:10.1.2.3")
    ('203.0.113.0/24', '2001:db8:abcd::/48', '10.1.2.0/24')
    >>> ip_prefix("not-an-ip"), ip_prefix("1.2.3.256"), ip_prefix("010.1.2.3")
    (None, None, '10.1.2.0/24')
    """
    parts = ip.split(".")
    if len(parts) == 4:  # dotted IPv4, parsed by hand: 5x faster than ipaddress on a miss
        a, b, c, d = parts
        if (
            a.isdigit() and b.isdigit() and c.isdigit() and d.isdigit()
            and len(a) < 4 and len(b) < 4 and len(c) < 4 and len(d) < 4
        ):  # fmt: skip
            ia, ib, ic = int(a), int(b), int(c)
            if ia < 256 and ib < 256 and ic < 256 and int(d) < 256:
                return f"{ia}.{ib}.{ic}.0/24"
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is None:
            return str(ipaddress.IPv6Network((int(addr) >> 80 << 80, 48)))
        addr = mapped
    return str(ipaddress.IPv4Network((int(addr) & 0xFFFFFF00, 24)))


# A resource type names a party when one of its words is a party word and none an object
# word: ``bank_account``, ``email_address``, ``slack_user`` are parties; ``email_message``,
# ``user_file``, ``slack_channel`` are things (a message or a file is not someone to pay).
_PARTY_WORDS: Final = frozenset({
    "account", "email", "user", "recipient", "payee", "contact", "member", "phone", "iban",
    "person", "party", "customer", "vendor", "beneficiary", "address", "principal", "invitee",
    "attendee", "participant",
})  # fmt: skip
_OBJECT_WORDS: Final = frozenset({
    "message", "file", "document", "folder", "channel", "event", "calendar", "mailbox",
    "transaction", "object", "bucket", "record", "report", "ticket", "thread", "attachment",
    "note", "table", "page", "post", "comment", "statement", "draft", "group", "role",
    "policy", "key", "secret", "session", "token",
})  # fmt: skip
_PARTY_SCHEMES: Final = ("mailto:", "mail:", "email:", "iban:", "acct:", "account:", "user:",
                         "tel:", "payee:", "contact:")  # fmt: skip
#: Parties of one write remembered beyond the first (``Features.parties``).
MAX_EXTRA_PARTIES: Final = 3


def is_party(uid: str, rtype: str | None) -> bool:
    """Whether a resource names a party (payee, recipient, invitee) rather than an object.

    By its type's words (``bank_account``, ``email_address``, ``slack_user`` are parties;
    ``email_message`` or ``user_file`` are not) or, only when it has no type, by the scheme
    of its uid (``iban:``, ``mailto:``, ``user:``, ...).

    >>> is_party("iban:DE89", None), is_party("x", "email_address"), is_party("file:1", "file")
    (True, True, False)
    >>> is_party("email_message:a/1", "email_message"), is_party("u", "SlackUser")
    (False, True)
    """
    if rtype:
        return _party_type(rtype)
    return uid[:8].lower().startswith(_PARTY_SCHEMES)


# By type alone: resources are many, their types few (a cache by uid and type missed on every
# new resource, and read its type's words again).
@lru_cache(maxsize=1 << 12)
def _party_type(rtype: str) -> bool:
    words = set(_WORDS.findall(_CAMEL.sub(r"\1_\2", rtype).lower()))
    return bool(words & _PARTY_WORDS) and not words & _OBJECT_WORDS


_WORDS: Final = re.compile(r"[a-z0-9]+")
_CAMEL: Final = re.compile(r"([a-z0-9])([A-Z])")


# --- value -> hash, remembered ------------------------------------------------------------------
# Most values repeat (countries, ASNs, services, operations, models): a dict lookup costs less
# than encoding the value and a crc. Each cache is emptied when full: a few MB at most, and a
# hash computed again is the same hash.
_CACHE_MAX: Final = 1 << 12


class _Hashes(dict[str, int]):
    """value -> :func:`cat_hash` of one feature (the empty string is not a key: absent)."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def __missing__(self, value: str) -> int:
        if len(self) >= _CACHE_MAX:
            self.clear()
        h = self[value] = zlib.crc32(value.encode(), self.seed) or 1
        return h


class _Asns(dict[int, tuple[str, int]]):
    """AS number -> (its decimal string, its hash)."""

    __slots__ = ()

    def __missing__(self, number: int) -> tuple[str, int]:
        if len(self) >= _CACHE_MAX:
            self.clear()
        text = str(number)
        out = self[number] = (text, zlib.crc32(text.encode(), _S_ASN) or 1)
        return out


class _Networks(dict[str, tuple[str | None, int]]):
    """Source address -> (its :func:`ip_prefix`, that prefix's hash; 0 if not an address)."""

    __slots__ = ()

    def __missing__(self, ip: str) -> tuple[str | None, int]:
        if len(self) >= _CACHE_MAX:
            self.clear()
        prefix = ip_prefix(ip)
        out = self[ip] = (prefix, (zlib.crc32(prefix.encode(), _S_IP) or 1) if prefix else 0)
        return out


# Per CATEGORICAL feature (those of asn and ip_prefix stay empty: _ASNS and _NETWORKS instead).
_HASHES: Final = tuple(_Hashes(seed) for seed in _SEED)
_TASK_HASHES: Final = _Hashes(_S_TASK)
_ASNS: Final = _Asns()
_NETWORKS: Final = _Networks()

# --- several events at once, flat ---------------------------------------------------------------
#: Per event in :attr:`FeatureRows.xs`: ``numeric`` (:data:`NUMERIC`), then ``volume``.
ROW_FLOATS: Final = len(NUMERIC) + 1
#: Per event in :attr:`FeatureRows.es`: ``cat_hashes`` (:data:`CATEGORICAL`), the
#: ``party_hashes`` padded with 0 to :data:`MAX_EXTRA_PARTIES`, then ``time_ms``,
#: ``hour_of_week``, ``sensitivity_rank``, ``mfa``, ``task`` - the round kernels' row layout
#: (:mod:`~pipeline.baselines.kernel`, ``E_T`` ...).
ROW_INTS: Final = len(CATEGORICAL) + MAX_EXTRA_PARTIES + 5
_N_CATEGORICAL: Final = len(CATEGORICAL)
_N_NUMERIC: Final = len(NUMERIC)
_R_T: Final = _N_CATEGORICAL + MAX_EXTRA_PARTIES
_NO_PARTIES: Final = (0,) * MAX_EXTRA_PARTIES


class FeatureRows:
    """The features of several events as flat lists, in the events' order: what the round
    kernels read, without a :class:`Features` object per event (built on demand by
    :meth:`features`, for the few events that need one).

    >>> from pipeline.events.schemas import Event
    >>> rows = extract_rows([Event(uid="e-1", class_uid=3002, activity_id=1, time_ms=0,
    ...                            identity_uid="bob", identity_kind="human", country="DE")])
    >>> len(rows), len(rows.xs) == ROW_FLOATS, len(rows.es) == ROW_INTS, rows.values[0][0]
    (1, True, True, 'DE')
    >>> rows.features(0) == extract(rows.events[0]), rows.es[_R_T + 1]  # hour of week
    (True, 72)
    """

    __slots__ = ("_built", "es", "events", "hashes", "parties", "values", "xs")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.xs: list[float] = []  # ROW_FLOATS per event
        self.es: list[int] = []  # ROW_INTS per event
        self.hashes: list[tuple[int, ...]] = []  # per event: ``Features.cat_hashes``
        self.values: list[tuple[str | None, ...]] = []  # per event: ``Features.cat_values``
        self.parties: list[tuple[str, ...]] = []  # per event: ``Features.parties``
        self._built: list[Features | None] = [None] * len(events)

    def __len__(self) -> int:
        return len(self.values)

    def features(self, i: int) -> Features:
        """Event ``i``'s :class:`Features` (equal to :func:`extract` of it), built once."""
        f = self._built[i]
        if f is None:
            ev = self.events[i]
            x = i * ROW_FLOATS
            e = i * ROW_INTS
            es = self.es
            parties = self.parties[i]
            p = e + _N_CATEGORICAL
            t, how, rank, mfa, task = es[e + _R_T : e + ROW_INTS]
            f = self._built[i] = Features(
                ev.identity_uid, ev.identity_kind, t, how, tuple(self.xs[x : x + _N_NUMERIC]),
                self.hashes[i], self.values[i], ev.uid, rank, mfa, task,
                self.xs[x + _N_NUMERIC], parties,
                tuple(es[p : p + len(parties)]) if parties else (),
            )  # fmt: skip
        return f


def extract(event: Event) -> Features:
    """The :class:`Features` of one event (pure, deterministic, ≈3 µs).

    >>> from pipeline.events.schemas import Event, ModelRef, Resource
    >>> ev = Event(uid="e-2", class_uid=6003, activity_id=2, time_ms=0,
    ...            identity_uid="agent-7", identity_kind="agent", operation="s3.GetObject",
    ...            resources=(Resource("a", "object", 2), Resource("b", "object", 3)),
    ...            delegated_by="alice", model=ModelRef(digest="sha256:" + "0" * 64))
    >>> f = extract(ev)
    >>> dict(zip(NUMERIC, f.numeric))["sensitivity"], f.sensitivity_rank, f.cat_values[5]
    (3.0, 3, 'b')
    >>> f.numeric[NUMERIC_INDEX["chain_depth"]], f.numeric[NUMERIC_INDEX["n_resources"]]
    (1.0, 2.0)
    """
    return extract_rows((event,)).features(0)


def extract_rows(events: Sequence[Event]) -> FeatureRows:
    """The features of several events, flat (:class:`FeatureRows`): the one definition of every
    feature (:func:`extract` is this for one event). One loop, no object per event beyond the
    value tuples: it runs for every event of a detection round."""
    rows = FeatureRows(events)
    xs, es, hashes, values, all_parties = rows.xs, rows.es, rows.hashes, rows.values, rows.parties
    log1p = math.log1p
    (h_country, _, _, h_service, h_operation, h_resource, h_delegator, h_model, h_env, h_auth,
     h_counterparty, h_combo) = _HASHES  # fmt: skip
    asns, networks, tasks = _ASNS, _NETWORKS, _TASK_HASHES
    for event in events:
        t = event.time_ms

        rank = 0
        resource: str | None = None
        rtype: str | None = None
        party: str | None = None
        parties: tuple[str, ...] = ()  # further parties of a write, beyond the first
        resources = event.resources
        if resources:
            best = -1
            write = event.activity_id in _WRITES
            for r in resources:
                rk = _RANK.get(r.confidentiality_id, 0)
                if rk > rank:
                    rank = rk
                uid = r.uid
                if uid:
                    if rk > best:  # the most sensitive resource that has an id
                        best = rk
                        resource = uid
                        rtype = r.type
                    if write and is_party(uid, r.type):
                        if party is None:
                            party = uid
                        elif (len(parties) < MAX_EXTRA_PARTIES and uid != party
                              and uid not in parties):  # fmt: skip
                            parties += (uid,)  # rare: a new tuple is cheaper than a list each time

        mfa = -1
        is_mfa = event.is_mfa
        if is_mfa is not None and event.class_uid == CLASS_AUTHENTICATION:
            mfa = 1 if is_mfa else 0

        bytes_out = event.bytes_out
        bytes_in = event.bytes_in
        delegator = event.delegated_by or None
        xs += (
            log1p(bytes_out) if bytes_out else 0.0,
            log1p(bytes_in) if bytes_in else 0.0,
            1.0 if event.status_id == _FAILURE else 0.0,
            1.0 if mfa == 0 else 0.0,
            float(rank),
            float(len(resources)),
            1.0 if delegator else 0.0,
            float((bytes_in or 0) + (bytes_out or 0)),  # volume
        )

        # Empty strings count as absent; `x or None` keeps that rule in one expression.
        country = event.country or None
        asn_num = event.asn
        asn, asn_hash = (None, 0) if asn_num is None else asns[asn_num]
        src_ip = event.src_ip
        prefix, prefix_hash = networks[src_ip] if src_ip else (None, 0)
        service = event.service or None
        operation = event.operation or None
        model_ref = event.model
        model = (model_ref.digest or None) if model_ref is not None else None
        environment = event.environment or None
        auth = event.auth_protocol or None
        combo = f"{operation or service or ''}|{rtype or ''}|{rank}" if resource else None
        session = event.session_uid or (
            event.credential.task_uid if event.credential is not None else None
        )
        # Unrolled on purpose: a loop or generator costs ~2x here (hot path).
        hs = (
            h_country[country] if country else 0,
            asn_hash,
            prefix_hash,
            h_service[service] if service else 0,
            h_operation[operation] if operation else 0,
            h_resource[resource] if resource else 0,
            h_delegator[delegator] if delegator else 0,
            h_model[model] if model else 0,
            h_env[environment] if environment else 0,
            h_auth[auth] if auth else 0,
            h_counterparty[party] if party else 0,
            h_combo[combo] if combo else 0,
        )
        hashes.append(hs)
        es += hs
        if parties:
            es += (*[h_counterparty[p] for p in parties], *_NO_PARTIES)[:MAX_EXTRA_PARTIES]
        else:
            es += _NO_PARTIES
        es += (
            t,
            (t // _HOUR_MS + _EPOCH_HOW) % 168,
            rank,
            mfa,
            tasks[session] if session else 0,
        )
        values.append((country, asn, prefix, service, operation, resource, delegator, model,
                       environment, auth, party, combo))  # fmt: skip
        all_parties.append(parties)
    return rows
