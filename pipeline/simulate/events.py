"""Columnar batches → OCSF 1.8 JSON messages (the input contract of STANDARDS.md §1).

Class 3002 Authentication goes to ``settings.identity_topic``, class 6003 API Activity to
``settings.agent_topic``; the message key is the identity uid. Events are built as plain dicts
whose repeating parts (users, endpoints, resources, APIs, models) are pre-encoded
:class:`msgspec.Raw` fragments, and serialised with msgspec: a few microseconds per event.

Ground truth (``Batch.camp``) is handed to the :class:`~pipeline.simulate.labels.LabelBook`
and never written into an event.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import numpy as np

from pipeline.simulate.batches import AUTH, Batch
from pipeline.simulate.behaviours import CP_SHIFT
from pipeline.simulate.catalogue import (
    AGENT,
    CONFIDENTIALITY_NAME,
    CONFIG_PROMPT,
    CONFIG_TOOLS,
    HUMAN,
    KINDS,
    SERVICE,
    Catalogue,
    agent_config_hash,
)
from pipeline.simulate.labels import LabelBook
from pipeline.simulate.population import _FIRST, _LAST, Population
from pipeline.simulate.seeds import Array, hash64, hex_ids, uuid_strings

__all__ = ["OCSF_VERSION", "PRODUCT_NAME", "Encoder"]

OCSF_VERSION: Final = "1.8.0"
PRODUCT_NAME: Final = "custos-simulator"
_PRODUCT: Final = {"name": PRODUCT_NAME, "vendor_name": "Custos"}
_UID_KEY: Final = 0x4D455441  # metadata.uid stream
_TASK_KEY: Final = 0x5441534B
_CRED_KEY: Final = 0x43524544
_SESSION_KEY: Final = 0x53455353
_CACHE_MAX: Final = 200_000  # bounded caches: a million identities must not pin a million dicts

_AUTH_ACTIVITY: Final = {
    1: "Logon",
    2: "Logoff",
    3: "Authentication Ticket",
    4: "Service Ticket Request",
    99: "Other",
}
_API_ACTIVITY: Final = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_AUTH_FAILURE: Final = ("Invalid credentials", "MFA challenge failed", "Account locked out")
_API_FAILURE: Final = ("AccessDenied", "Throttling", "ResourceNotFound")
_USER_TYPE: Final = {1: "User", 2: "Admin", 4: "Service", 99: "AI Agent"}
_NOT_CONF: Final = {"confidentiality_id": 1, "confidentiality": "Not Confidential"}
#: Declared on every API Activity: resources carry data_classifications (OCSF profile).
_API_PROFILES: Final = ["data_classification"]
# Counterparties (profiles): Batch.cpty kind -> resource type.
_CP_TYPE: Final = ("bank_account", "email_address", "user")
# IBAN countries of counterparties' banks.
_CP_COUNTRIES: Final = ("DE", "FR", "NL", "GB", "ES", "IE", "IT", "BE", "CH", "AT")
_CP_ORGS: Final = (
    "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne", "wonka",
    "tyrell", "soylent", "cyberdyne", "oscorp", "aperture", "gringotts", "monarch",
)  # fmt: skip
_CP_MASK: Final = (1 << CP_SHIFT) - 1


def counterparty_uid(cpty: int) -> tuple[str, str]:
    """``(resources[].uid, resources[].type)`` of a ``Batch.cpty`` value.

    >>> counterparty_uid((1 << 58) | 123456789)[1]
    'email_address'
    """
    kind, h = cpty >> CP_SHIFT, cpty & _CP_MASK
    domain = f"{_CP_ORGS[(h >> 15) % len(_CP_ORGS)]}{(h >> 19) % 90 + 10}.example"
    if kind == 0:
        cc = _CP_COUNTRIES[h % len(_CP_COUNTRIES)]
        uid = f"iban:{cc}{(h >> 4) % 90 + 10}{(h >> 11) % 10**16:016d}"
    else:
        person = f"{_FIRST[(h >> 3) % len(_FIRST)]}.{_LAST[(h >> 9) % len(_LAST)]}"
        uid = f"{'mail' if kind == 1 else 'user'}:{person}@{domain}"
    return uid, _CP_TYPE[kind]


def _ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", value))


class Encoder:
    """Serialise batches into ``(topic, key, value, time_ms)`` tuples, feeding the label book.

    Sub-objects that repeat (users, endpoints, resources, APIs, models) are encoded once and
    embedded as :class:`msgspec.Raw`, which roughly halves the serialisation cost.
    """

    def __init__(
        self,
        pop: Population,
        cat: Catalogue,
        *,
        identity_topic: str,
        agent_topic: str,
        models: list[tuple[str, str, str]],
        labels: LabelBook | None = None,
    ) -> None:
        self.pop = pop
        self.cat = cat
        self.identity_topic = identity_topic
        self.agent_topic = agent_topic
        self.labels = labels
        self.counter = 0  # events emitted so far: metadata.uid derives from it
        self._uid_key = int(hash64(pop.key, _UID_KEY)[0])
        self._task_key = int(hash64(pop.key, _TASK_KEY)[0])
        enc = msgspec.json.Encoder().encode
        self._encode = enc

        def raw(obj: object) -> msgspec.Raw:
            return msgspec.Raw(enc(obj))

        self._raw = raw
        self._users: dict[int, tuple[bytes, msgspec.Raw, str]] = {}
        # (agent, cfg bits) -> (tool manifest hash, system prompt hash): what agents run with.
        self._configs: dict[tuple[int, int], tuple[str, str]] = {}
        self._endpoints: dict[tuple[int, int, int], msgspec.Raw] = {}
        self._product = raw(_PRODUCT)
        self._models = [raw({"name": n, "version": v, "digest": d}) for n, v, d in models]
        self._envs = list(cat.env_name)
        self._resources = [
            raw(
                [
                    {
                        "uid": uid,
                        "type": cat.service_rtype[int(cat.res_service[r])],
                        # OCSF 1.4+: a list, under the data_classification profile.
                        "data_classifications": [{
                            "confidentiality_id": cat.conf_id[int(cat.res_rank[r])],
                            "confidentiality": CONFIDENTIALITY_NAME[
                                cat.conf_id[int(cat.res_rank[r])]
                            ],
                        }],
                    }
                ]
            )
            for r, uid in enumerate(cat.res_uid)
        ]
        self._resource_items = [raw(msgspec.json.decode(r)[0]) for r in self._resources]
        self._cpty: dict[int, msgspec.Raw] = {}
        self._apis = [
            raw({"operation": name, "service": {"name": cat.service_name[int(svc)]}})
            for name, svc in zip(cat.op_name, cat.op_service.tolist(), strict=True)
        ]
        self._services = [raw({"name": name}) for name in cat.service_name]
        self._dst = [raw({"hostname": f"{name}.example.com"}) for name in cat.service_name]
        self._rationales = [raw(text) for text in cat.rationale]
        self._admin: list[bool] = cat.op_admin.tolist()  # denied admin calls say AccessDenied
        self._kinds = list(KINDS)
        agent_groups = {int(g) for g in cat.groups_of_kind(AGENT)}
        self._group_dicts = [
            {"name": name, "type": "agent-kind" if g in agent_groups else "peer-group"}
            for g, name in enumerate(cat.group_name)
        ]

    # ---- cached sub-objects -------------------------------------------------------------------
    def _prepare_users(self, idents: Array) -> None:
        """Encode user objects for identities not cached yet (vectorised names and uids)."""
        uniq = np.unique(idents)
        users = self._users
        missing = uniq[[i not in users for i in uniq.tolist()]]
        if not len(missing):
            return
        if len(users) + len(missing) > _CACHE_MAX:
            users.clear()  # bounded memory; this batch's identities are all rebuilt below
            missing = uniq
        pop, cat = self.pop, self.cat
        uids = pop.uids(missing)
        names = pop.names(missing)
        groups = pop.group[missing].tolist()
        teams = pop.team[missing].tolist()
        for i, uid, name, g, team in zip(missing.tolist(), uids, names, groups, teams, strict=True):
            kind = pop.kind_of(i)
            group: dict[str, str]
            if kind == HUMAN:
                type_id = 2 if cat.group_admin[g] else 1
                group = {"name": cat.group_name[g], "uid": f"{cat.group_name[g]}-team-{team:02d}"}
            else:
                type_id = 4 if kind == SERVICE else 99
                group = self._group_dicts[g]
            user = {
                "uid": uid,
                "name": name,
                "type_id": type_id,
                "type": _USER_TYPE[type_id],
                "groups": [group],
            }
            users[i] = (uid.encode(), self._raw(user), self._kinds[kind])

    def _config(self, ident: int, cfg: int) -> tuple[str, str]:
        key = (ident, cfg)
        hashes = self._configs.get(key)
        if hashes is None:
            if len(self._configs) > _CACHE_MAX:
                self._configs.clear()
            uid = self.pop.uid(ident)
            hashes = (
                agent_config_hash(uid, "tools", bool(cfg & CONFIG_TOOLS)),
                agent_config_hash(uid, "prompt", bool(cfg & CONFIG_PROMPT)),
            )
            self._configs[key] = hashes
        return hashes

    def _block(self, res: int, more: int) -> list[msgspec.Raw]:
        """``res`` and up to ``more`` further resources of its (service, rank) block."""
        cat = self.cat
        svc, rank = int(cat.res_service[res]), int(cat.res_rank[res])
        start, count = int(cat.res_start[svc, rank]), int(cat.res_count[svc, rank])
        if not start <= res < start + count:
            return [self._resource_items[res]]
        k = min(more, count - 1)
        return [self._resource_items[start + (res - start + j) % count] for j in range(k + 1)]

    def _counterparty(self, cpty: int) -> msgspec.Raw:
        obj = self._cpty.get(cpty)
        if obj is None:
            if len(self._cpty) > _CACHE_MAX:
                self._cpty.clear()
            uid, rtype = counterparty_uid(cpty)
            obj = self._raw({"uid": uid, "type": rtype})
            self._cpty[cpty] = obj
        return obj

    def _endpoint(self, geo: int, asn: int, ip: int) -> msgspec.Raw:
        key = (geo, asn, ip)
        ep = self._endpoints.get(key)
        if ep is None:
            if len(self._endpoints) > _CACHE_MAX:
                self._endpoints.clear()
            cat = self.cat
            ep = self._raw(
                {
                    "ip": _ip(ip),
                    "location": {
                        "country": cat.geo_country[geo],
                        "city": cat.geo_city[geo],
                        "lat": float(cat.geo_lat[geo]),
                        "long": float(cat.geo_long[geo]),
                    },
                    "autonomous_system": {
                        "number": int(cat.asn_number[asn]),
                        "name": cat.asn_name[asn],
                    },
                }
            )
            self._endpoints[key] = ep
        return ep

    # ---- the hot loop ---------------------------------------------------------------------------
    def encode(self, b: Batch) -> Iterator[tuple[str, bytes, bytes, int]]:
        """Yield one message per event of a time-sorted batch, in order."""
        n = len(b)
        if n == 0:
            return
        pop = self.pop
        self._prepare_users(b.ident)
        uids = uuid_strings(
            np.arange(self.counter, self.counter + n, dtype=np.int64), self._uid_key
        )
        self.counter += n
        tasks = uuid_strings(b.task, self._task_key)  # garbage where task == -1 (unused)
        # One auxiliary id per event: the step credential (agents) or the web session (humans).
        cred = b.cred_to >= 0
        aux_h = np.where(
            cred,
            hash64(pop.key, _CRED_KEY, b.task, b.cred_to, b.cred_step),
            hash64(pop.key, _SESSION_KEY, b.ident, b.time // 86_400_000, b.asn),
        )
        aux = hex_ids(aux_h, np.where(cred, "cred-", "sess-"))
        detail = (aux_h % np.uint64(3)).tolist()  # which failure reason, when failed
        users = self._users
        endpoint = self._endpoint
        uid_of = pop.uid
        n_human = pop.n_human
        resources, apis, services, dst = self._resources, self._apis, self._services, self._dst
        models, envs, rationales = self._models, self._envs, self._rationales
        protos, proto_ids = self.cat.proto_name, self.cat.proto_id
        admin = self._admin
        config = self._config
        product = self._product
        encode = self._encode
        labels = self.labels
        id_topic, api_topic = self.identity_topic, self.agent_topic
        has_cpty = bool((b.cpty >= 0).any())
        cptys = b.cpty.tolist() if has_cpty else [-1] * n
        mores = b.res_more.tolist() if bool((b.res_more > 0).any()) else [0] * n
        block = self._block
        items, counterparty = self._resource_items, self._counterparty

        cols = zip(
            uids,
            b.time.tolist(),
            b.ident.tolist(),
            b.eclass.tolist(),
            b.activity.tolist(),
            b.status.tolist(),
            b.svc.tolist(),
            b.op.tolist(),
            b.res.tolist(),
            b.peer.tolist(),
            b.bytes_in.tolist(),
            b.bytes_out.tolist(),
            b.geo.tolist(),
            b.asn.tolist(),
            b.ip.tolist(),
            b.mfa.tolist(),
            b.proto.tolist(),
            b.task.tolist(),
            tasks,
            b.deleg.tolist(),
            b.cred_to.tolist(),
            b.cred_step.tolist(),
            b.cred_exp.tolist(),
            b.model.tolist(),
            b.env.tolist(),
            b.why.tolist(),
            b.cfg.tolist(),
            b.camp.tolist(),
            cptys,
            mores,
            aux,
            detail,
            strict=True,
        )
        for (
            uid,
            t,
            ident,
            eclass,
            act,
            status,
            svc,
            op,
            res,
            peer,
            b_in,
            b_out,
            geo,
            asn,
            ip,
            mfa,
            proto,
            task,
            task_uid,
            deleg,
            cred_to,
            cred_step,
            cred_exp,
            model,
            env,
            why,
            cfg,
            camp,
            cpty,
            more,
            aux_id,
            det,
        ) in cols:
            key, user, kind = users[ident]
            failed = status == 2
            meta: dict[str, Any] = {"uid": uid, "version": OCSF_VERSION, "product": product}
            unmapped: dict[str, Any] = {"identity_kind": kind}
            if eclass == AUTH:
                ev: dict[str, Any] = {
                    "class_uid": 3002,
                    "class_name": "Authentication",
                    "category_uid": 3,
                    "category_name": "Identity & Access Management",
                    "activity_id": act,
                    "activity_name": _AUTH_ACTIVITY[act],
                    "type_uid": 300200 + act,
                    "severity_id": 2 if failed else 1,
                    "severity": "Low" if failed else "Informational",
                    "status_id": status,
                    "status": "Failure" if failed else "Success",
                    "time": t,
                    "metadata": meta,
                    "user": user,
                    "service": services[svc],
                    "dst_endpoint": dst[svc],
                    "src_endpoint": endpoint(geo, asn, ip),
                }
                if failed:
                    ev["status_detail"] = _AUTH_FAILURE[det]
                if proto >= 0:
                    ev["auth_protocol_id"] = proto_ids[proto]
                    ev["auth_protocol"] = protos[proto]
                if mfa >= 0:
                    ev["is_mfa"] = mfa == 1
                if task >= 0:
                    ev["session"] = {"uid": task_uid}
                    meta["correlation_uid"] = task_uid
                topic = id_topic
            else:
                actor: dict[str, Any] = {"user": user}
                ev = {
                    "class_uid": 6003,
                    "class_name": "API Activity",
                    "category_uid": 6,
                    "category_name": "Application Activity",
                    "activity_id": act,
                    "activity_name": _API_ACTIVITY[act],
                    "type_uid": 600300 + act,
                    "severity_id": 2 if failed else 1,
                    "severity": "Low" if failed else "Informational",
                    "status_id": status,
                    "status": "Failure" if failed else "Success",
                    "time": t,
                    "metadata": meta,
                    "actor": actor,
                    "api": apis[op],
                    "src_endpoint": endpoint(geo, asn, ip),
                    # API Activity has no traffic: the call's sizes are its HTTP messages'.
                    "http_request": {"length": b_out},
                    "http_response": {"code": 403 if failed else 200, "length": b_in},
                }
                meta["profiles"] = _API_PROFILES
                if res >= 0:
                    ev["resources"] = resources[res] if not more else block(res, more)
                elif peer >= 0:
                    ev["resources"] = [
                        {"uid": uid_of(peer), "type": "agent", "data_classifications": [_NOT_CONF]}
                    ]
                if cpty >= 0:  # profiles: whom the payment / mail / invite is for
                    cp = counterparty(cpty)
                    ev["resources"] = (
                        [*(block(res, more) if more else [items[res]]), cp] if res >= 0 else [cp]
                    )
                if failed:
                    ev["status_detail"] = "AccessDenied" if admin[op] else _API_FAILURE[det]
                if task >= 0:
                    actor["session"] = {"uid": task_uid}
                    meta["correlation_uid"] = task_uid
                    if cred_to >= 0:
                        unmapped["credential"] = {
                            "uid": aux_id,
                            "issued_to": uid_of(cred_to),
                            "task_uid": task_uid,
                            "step": cred_step,
                            "expires_at": cred_exp,
                        }
                elif ident < n_human:
                    actor["session"] = {"uid": aux_id}
                topic = api_topic
            if model >= 0:  # agents: the model and configuration they run with
                unmapped["model"] = models[model]
                tools, prompt = config(ident, cfg)
                unmapped["tool_manifest_hash"] = tools
                unmapped["system_prompt_hash"] = prompt
            if deleg >= 0:
                unmapped["delegated_by"] = uid_of(deleg)
            if env >= 0:
                unmapped["environment"] = envs[env]
            if why >= 0:
                unmapped["rationale"] = rationales[why]
            ev["unmapped"] = unmapped
            if camp >= 0 and labels is not None:
                labels.add(camp, ident, uid, t)
            yield topic, key, encode(ev), t
