"""Kafka security for the managed broker: TLS, one SCRAM principal per service, ACLs.

Signatures protect commands, feedback and model announcements, but not alerts, acks, reports or
audit input: on an open broker anyone who can reach it can forge those. With
``CUSTOS_KAFKA_SECURE=true`` the managed broker (``custos kafka up``) instead

* listens for clients on ``SASL_SSL`` only: TLS with a certificate from a CA generated on first
  run (``<home>/kafka/security/tls``; clients trust ``ca.pem``), SCRAM-SHA-512 logins;
* keeps its KRaft controller listener on loopback behind SASL/PLAIN with the admin login;
* authorises every request (``StandardAuthorizer``, nothing allowed without an ACL), with one
  principal per Custos service and the ACLs of :func:`acl_plan`: only the worker writes alerts,
  scores, commands and approvals, only responders write acks, only the auditor writes the audit
  topics, event producers write only the input topics.

Passwords are generated on first run, one file per principal (mode 0600) under
``<home>/kafka/security/principals``; each Custos command logs in as its own principal
(``pipeline.cli.common.PRINCIPALS``), or as ``CUSTOS_KAFKA_PRINCIPAL``. For an existing cluster,
``docs/KAFKA-SECURITY.md`` lists the same principals and ACLs to create there.

>>> from pipeline.config import Settings
>>> plan = acl_plan(Settings())
>>> sorted({a.principal for a in plan if a.topic == "custos.alerts" and a.operation == "WRITE"})
['User:responder', 'User:worker']
>>> [a.principal for a in plan if a.topic == "custos.quarantine.acks" and a.operation == "WRITE"]
['User:responder']
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pipeline.config import Settings
from pipeline.errors import KafkaError

__all__ = ["PRINCIPALS", "Acl", "acl_plan", "apply_acls", "ensure_secrets", "server_properties"]

#: Every principal, and what it is for.
PRINCIPALS: Final[dict[str, str]] = {
    "admin": "custos kafka up / topics apply / demo: the broker's own login, super user",
    "worker": "custos worker, custos ingest: reads inputs and control topics, writes results",
    "responder": "custos respond: reads commands, writes acknowledgements",
    "auditor": "custos audit run: reads decisions, writes the audit log and its checkpoints",
    "broker": "custos broker (credential broker): writes refused uses as input events",
    "producer": "event sources (custos simulate, collectors): write the input topics only",
    "analyst": "analysts' decisions: approvals, releases, feedback, model and registry updates",
    "console": "read-only commands (status, export, audit verify, pending approvals)",
}

Operation = Literal["READ", "WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"]


@dataclass(frozen=True, slots=True)
class Acl:
    """Allow ``principal`` ``operation`` on a topic (``prefixed``: every name starting so) or
    on a consumer group (``group`` set, ``topic`` empty)."""

    principal: str
    operation: Operation
    topic: str = ""
    group: str = ""
    prefixed: bool = False


def acl_plan(s: Settings) -> list[Acl]:
    """The ACLs of every Custos principal for these settings' topic and group names."""
    out: list[Acl] = []

    def allow(who: str, ops: tuple[Operation, ...], *topics: str, prefixed: bool = False) -> None:
        for t in topics:
            for op in ops:
                out.append(Acl(f"User:{who}", op, topic=t, prefixed=prefixed))

    def group(who: str, name: str, prefixed: bool = False) -> None:
        out.append(Acl(f"User:{who}", "READ", group=name, prefixed=prefixed))

    read: tuple[Operation, ...] = ("READ", "DESCRIBE")
    write: tuple[Operation, ...] = ("WRITE", "DESCRIBE")
    inputs = sorted({s.identity_topic, s.agent_topic, s.rejections_topic})
    control = (s.models_topic, s.agent_models_topic)
    # The worker: inputs, feedback and control topics in; results out; its own internal
    # topics (re-keyed events, signals, the state changelog, faust's assignor) all its own.
    allow("worker", read, *inputs, s.feedback_topic, *control)
    allow("worker", write, s.alerts_topic, s.scores_topic, s.quarantine_topic,
          s.approvals_topic, s.deadletter_topic, s.reports_topic,
          s.feedback_topic)  # fmt: skip  (feedback: re-routed to the partition owning it)
    allow("worker", ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"),
          s.app_id + "-", "f-reply-", prefixed=True)  # fmt: skip
    group("worker", s.app_id)
    group("worker", s.app_id + "-", prefixed=True)  # faust's shell (<app_id>-shell)
    group("worker", s.group_id)
    # Responders: commands in; acks, their dead letters, reports and the one alert kind they
    # raise themselves (a quarantine that failed) out.
    allow("responder", read, s.quarantine_topic)
    allow("responder", write, s.acks_topic, s.quarantine_deadletter_topic, s.reports_topic,
          s.alerts_topic)  # fmt: skip
    group("responder", s.responder_group)
    # The auditor reads every decision and writes the audit log.
    allow("auditor", read, s.alerts_topic, s.quarantine_topic, s.approvals_topic, s.acks_topic,
          s.feedback_topic, s.reports_topic, *control, s.audit_topic,
          s.audit_checkpoints_topic)  # fmt: skip
    allow("auditor", write, s.audit_topic, s.audit_checkpoints_topic, s.reports_topic)
    group("auditor", s.auditor_group)
    # The credential broker reports refused uses as input events.
    allow("broker", write, s.rejections_topic, s.reports_topic)
    allow("producer", write, *inputs)
    # Analysts sign their decisions; the ACL adds that only they may put them on the broker.
    allow("analyst", write, s.quarantine_topic, s.feedback_topic, *control)
    allow("analyst", read, s.approvals_topic, s.alerts_topic, s.reports_topic, *control)
    everything = sorted({*inputs, s.alerts_topic, s.scores_topic, s.quarantine_topic,
                         s.approvals_topic, s.acks_topic, s.deadletter_topic,
                         s.quarantine_deadletter_topic, s.audit_topic, s.audit_checkpoints_topic,
                         s.feedback_topic, s.reports_topic, *control})  # fmt: skip
    allow("console", read, *everything)
    # Readers outside a group (read_all, exports) still name a group id; never joined.
    for who in ("console", "analyst", "auditor", "worker", "responder"):
        group(who, "custos-", prefixed=True)
    return list(dict.fromkeys(out))  # reading and writing a topic both need DESCRIBE: once


# --- secrets: passwords and TLS material -----------------------------------------------------


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_secrets(s: Settings) -> dict[str, str]:
    """Passwords of every principal (created once) and the TLS files; returns the passwords."""
    root = s.kafka_security_path
    passwords = {}
    for name in PRINCIPALS:
        path = root / "principals" / f"{name}.password"
        if not path.exists():
            _write_secret(path, secrets.token_urlsafe(24).encode())
        passwords[name] = path.read_text().strip()
    tls = root / "tls"
    if not (tls / "ca.pem").exists() or not (tls / "broker.pem").exists():
        _make_tls(tls, s.kafka_host)
    return passwords


def _make_tls(tls: Path, host: str) -> None:
    """A CA and the broker's certificate (for ``host``), valid ten years; keys stay local."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Custos local Kafka CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([san, x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The broker reads one PEM file: its private key (PKCS#8, unencrypted, mode 0600), then
    # its chain. The CA key is not kept: a new certificate means a new CA.
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    for name in ("broker.pem", "ca.pem"):
        (tls / name).unlink(missing_ok=True)
    _write_secret(tls / "broker.pem",
                  key_pem + cert.public_bytes(pem) + ca.public_bytes(pem))  # fmt: skip
    (tls / "ca.pem").write_bytes(ca.public_bytes(pem))


def server_properties(s: Settings, passwords: dict[str, str]) -> str:
    """The broker settings that secure it (appended to the rendered server.properties)."""
    admin = passwords["admin"]
    tls = s.kafka_security_path / "tls"
    jaas_plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                  f'username="admin" password="{admin}" user_admin="{admin}";')  # fmt: skip
    jaas_scram = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                  f'username="admin" password="{admin}";')  # fmt: skip
    h = s.kafka_host
    return "\n".join([
        "# --- security (CUSTOS_KAFKA_SECURE): pipeline/kafka/security.py ---",
        f"listeners=SASL_SSL://{h}:{s.kafka_port},CONTROLLER://{h}:{s.kafka_controller_port}",
        f"advertised.listeners=SASL_SSL://{h}:{s.kafka_port}",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={jaas_plain}",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas_scram}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls / 'broker.pem'}",
        # The broker checks its own TLS set-up with a handshake at start: it trusts the CA too.
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls / 'ca.pem'}",
        "ssl.client.auth=none",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "allow.everyone.if.no.acl.found=false",
        "",
    ])  # fmt: skip


def apply_acls(s: Settings, passwords: dict[str, str]) -> tuple[int, int]:
    """Create every principal's SCRAM login and its ACLs (as admin). Returns (users, ACLs)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, no __all__
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    from pipeline.kafka.clients import make_admin

    admin = make_admin(s.as_principal("admin") if not s.kafka_principal else s)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, pw.encode())
        for name, pw in passwords.items() if name != "admin"
    ]  # fmt: skip
    bindings = []
    for a in acl_plan(s):
        kind = ResourceType.TOPIC if a.topic else ResourceType.GROUP
        pattern = ResourcePatternType.PREFIXED if a.prefixed else ResourcePatternType.LITERAL
        bindings.append(AclBinding(kind, a.topic or a.group, pattern, a.principal, "*",
                                   AclOperation[a.operation], AclPermissionType.ALLOW))  # fmt: skip
    try:
        for fut in admin.alter_user_scram_credentials(upserts).values():
            fut.result(timeout=30)
        for fut in admin.create_acls(bindings).values():
            fut.result(timeout=30)
    except KafkaException as exc:
        raise KafkaError(f"could not create Kafka principals and ACLs: {exc}") from None
    return len(upserts), len(bindings)
