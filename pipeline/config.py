"""One frozen, typed settings object for every Custos process.

Every setting has a default, an environment variable ``CUSTOS_<NAME>`` and one line of
documentation. ``custos config`` prints the effective values (secrets masked).

>>> s = Settings.from_env({"CUSTOS_KAFKA_PORT": "19092"})
>>> s.kafka_port, s.bootstrap_servers
(19092, '127.0.0.1:19092')
>>> Settings.from_env({"CUSTOS_BOOTSTRAP": "k1:9092"}).managed_broker
False
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
MASK = "********"


def _setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"doc": doc, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    """Effective configuration. Build it with :meth:`from_env`; never mutate it."""

    # --- Kafka -----------------------------------------------------------------------------
    bootstrap: str = _setting(
        "", "Existing Kafka cluster (host:port,...); empty = the broker `custos kafka` manages"
    )
    kafka_host: str = _setting("127.0.0.1", "Address the managed broker listens on (loopback)")
    kafka_port: int = _setting(9092, "Client port of the managed broker")
    kafka_controller_port: int = _setting(9093, "KRaft controller port of the managed broker")
    kafka_heap: str = _setting("768m", "JVM heap of the managed broker (>= 512m: log cleaner)")
    kafka_start_timeout_s: float = _setting(90.0, "Seconds to wait for the broker to answer")
    home: str = _setting(
        str(Path.home() / ".custos"),
        "State directory: Kafka jars cache, broker data and logs, worker state",
    )
    kafka_libs: str = _setting(
        "", "Cache of the broker jars Maven copies; empty = <home>/kafka/libs"
    )
    kafka_secure: bool = _setting(
        False,
        "Managed broker: TLS on the client listener, SCRAM logins, one principal per Custos "
        "service and ACLs (custos kafka up creates them; docs/KAFKA-SECURITY.md)",
    )
    kafka_principal: str = _setting(
        "",
        "Kafka principal of this process on a secure managed broker (worker, responder, "
        "auditor, broker, producer, analyst, console, admin); empty = the command's own",
    )
    security_protocol: str = _setting(
        "PLAINTEXT", "Client security protocol for an existing cluster (PLAINTEXT, SASL_SSL...)"
    )
    sasl_mechanism: str = _setting(
        "SCRAM-SHA-512", "SASL mechanism for an existing cluster (SCRAM-SHA-512, PLAIN...)"
    )
    sasl_username: str = _setting("", "SASL username for an existing cluster")
    sasl_password: str = _setting("", "SASL password for an existing cluster", secret=True)
    ssl_ca_file: str = _setting("", "CA certificate (PEM) the cluster's TLS certificate chains to")
    compression: str = _setting("lz4", "Producer compression (none, gzip, snappy, lz4, zstd)")

    # --- Topics ----------------------------------------------------------------------------
    topics_file: str = _setting(
        str(REPO_ROOT / "infra" / "topics.yaml"), "Declarative topic list applied by `topics apply`"
    )
    identity_topic: str = _setting("identity.events", "Input: OCSF Authentication (3002)")
    agent_topic: str = _setting("agent.events", "Input: OCSF API Activity (6003)")
    deadletter_topic: str = _setting(
        "custos.deadletter", "Malformed or invalid input: original bytes + reason + source offset"
    )

    # --- Input contract --------------------------------------------------------------------
    max_event_bytes: int = _setting(1_048_576, "Larger input messages are dead-lettered")
    min_event_time_ms: int = _setting(
        946_684_800_000, "Events before this time (ms, default 2000-01-01) are absurd"
    )
    max_future_skew_ms: int = _setting(
        86_400_000, "Events more than this far (ms) ahead of wall-clock time are absurd"
    )

    # --- Ingest / summary consumer ---------------------------------------------------------
    group_id: str = _setting("custos-ingest", "Consumer group of the ingest/validation consumer")
    batch_size: int = _setting(5000, "Messages fetched per consume() call")

    # --- Risk and alerting policy ----------------------------------------------------------
    risk_half_life_s: float = _setting(
        3600.0, "Accumulated risk (0-100) halves every this many seconds of event time"
    )
    risk_noise_floor: float = _setting(
        0.75, "Anomaly scores below this add no risk (tuned with `custos evaluate`)"
    )
    risk_gain: float = _setting(
        30.0, "Risk a score of 1.0 adds; linear from 0 at the noise floor (2 strong events alert)"
    )
    risk_repeat_weight: float = _setting(
        0.25,
        "Within an incident, evidence on a feature already in it adds this share of its risk "
        "(one harmless change repeated is not corroboration)",
    )
    risk_rule_high: float = _setting(
        40.0,
        "Risk a High-severity Zero Trust rule hit adds (at the alert threshold: it alerts on its "
        "own; Critical rules always alert and are quarantine-worthy)",
    )
    risk_alert_threshold: float = _setting(
        40.0, "Risk at which an incident opens a finding (OCSF risk level Medium)"
    )
    risk_quarantine_threshold: float = _setting(
        80.0, "Risk that marks an incident quarantine-worthy (Critical; a Critical rule too)"
    )
    risk_close_threshold: float = _setting(
        10.0, "An incident closes once risk stays below this for incident_close_after_s"
    )
    incident_close_after_s: float = _setting(
        3600.0, "Quiet period (risk below the close threshold) that closes an incident"
    )
    finding_update_interval_s: float = _setting(
        1800.0,
        "Update an open finding at most this often, unless its severity or risk level rises or "
        "a new kind of evidence joins it",
    )
    incident_habituate_after_s: float = _setting(
        86_400.0,
        "An incident still open after this long without analyst confirmation is a baseline that "
        "failed to learn: it closes as habituated, its held events are learned and its evidence "
        "is suppressed for the identity for incident_habituate_suppress_s (recorded)",
    )
    incident_habituate_suppress_s: float = _setting(
        7 * 86_400.0, "How long a habituated incident's evidence stays suppressed"
    )
    incident_recur_window_s: float = _setting(
        8 * 86_400.0,
        "An alerted incident that closed without analyst confirmation is remembered this long: "
        "a later incident whose evidence is only that again (a nightly job's volume, a weekly "
        "batch's failures) is a recurring behaviour - recorded as a suppressed finding and "
        "learned like a habituated one, not alerted again. Critical rules always alert",
    )
    quarantine_ask_after_unconfirmed_s: float = _setting(
        14 * 86_400.0,
        "After an automatic quarantine whose incident ended without analyst confirmation (it "
        "closed, habituated or was dismissed), the identity's contains wait on approvals_topic "
        "for this long: a second automatic quarantine would rest on the same unconfirmed guess. "
        "Critical rules still contain at once; 0 = never ask",
    )
    suppressions_file: str = _setting(
        "", "YAML/JSON list of suppressions {identity, feature, until, reason}; empty = none"
    )

    # --- Detection ---------------------------------------------------------------------------
    directory_file: str = _setting(
        "", "Identity directory JSONL (peer groups, sensitivity ceilings, approved models)"
    )
    model_allowlist_file: str = _setting(
        "",
        "Agent model registry YAML (name, version, digest, trainer, lineage, approved/revoked), "
        "updated live by agent_models_topic; empty = none (each agent's first digest is pinned; "
        "models/examples/agent-models.yaml describes the simulator's builds)",
    )
    agent_models_enforce: bool = _setting(
        False,
        "Treat agent models the registry does not list as model_provenance violations; false = "
        "pin them per agent and report each new (name, version, digest) once as inventory",
    )

    calibration_window: int = _setting(
        20_000,
        "Raw detector scores a calibrator ranks an event among (its tail resolution: a score of "
        "1.0 means rarer than all of them)",
    )
    busy_events_per_hour: float = _setting(
        20.0,
        "Identities busier than this (events/h) need rarer events to add risk: scores are "
        "discounted by half the log of the excess (0 = off)",
    )
    state_cache_size: int = _setting(
        50_000, "Decoded identity states kept in memory (LRU; about 4 KB each); 0 = off"
    )

    # --- Worker (faust) ------------------------------------------------------------------------
    app_id: str = _setting("custos-worker", "Worker id: consumer group and internal-topic prefix")
    alerts_topic: str = _setting("custos.alerts", "Output: OCSF Detection Findings (2004)")
    scores_topic: str = _setting("custos.scores", "Output: every event's score (if emit_scores)")
    emit_scores: bool = _setting(False, "Publish every event's explained score (for notebooks)")
    worker_partitions: int = _setting(6, "Partitions of the input topics and the state changelog")
    worker_batch: int = _setting(2000, "Micro-batch size: events scored together")
    worker_batch_within_s: float = _setting(0.2, "Longest wait to fill a micro-batch (seconds)")
    worker_commit_s: float = _setting(2.0, "How often input offsets are committed (seconds)")
    snapshot_interval_s: float = _setting(
        30.0, "How often identity state is written to its changelog, as one snapshot per "
        "partition (seconds); a restart replays the input since the last one. 0 = every unit "
        "of work writes its state through"
    )
    worker_send_timeout_s: float = _setting(
        30.0, "A dead-letter or alert write not done by then crashes the worker (no skipping)"
    )
    worker_web_port: int = _setting(6066, "Worker's web/metrics port")
    worker_web_bind: str = _setting(
        "127.0.0.1", "Address the worker's web/metrics server binds (0.0.0.0 in a pod, for "
        "probes and Prometheus; it serves counters only, no identity data)"
    )
    worker_datadir: str = _setting(
        "", "Worker state directory (shared-model checkpoint); empty = <home>/worker/<app_id>"
    )

    # --- Quarantine (issue 4) -------------------------------------------------------------------
    quarantine_topic: str = _setting("custos.quarantine", "Signed OpenC2 contain/cancel commands")
    approvals_topic: str = _setting(
        "custos.approvals", "Contain commands waiting for a human approval"
    )
    acks_topic: str = _setting("custos.quarantine.acks", "Responder acknowledgements (102/2xx/...)")
    quarantine_duration_s: float = _setting(
        3600.0, "How long a quarantine lasts unless released or renewed (OpenC2 duration)"
    )
    quarantine_auto_min_severity: int = _setting(
        5,
        "Findings at or above this OCSF severity quarantine at once; quarantine-worthy ones "
        "below it wait on approvals_topic for an analyst (6 = always ask)",
    )
    quarantine_dry_run: bool = _setting(
        False, "Commands carry dry_run: responders report what they would revoke, change nothing"
    )
    command_key_file: str = _setting(
        "",
        "Private JWK that signs quarantine commands; empty = <home>/keys/commands.jwk "
        "(generated on first run, mode 0600)",
    )
    command_trusted_jwks: str = _setting(
        "",
        "JWKS of keys whose commands responders accept; empty = the public half of "
        "command_key_file, written beside it",
    )
    analyst_key_file: str = _setting(
        "",
        "Private JWK this analyst signs approvals, releases and feedback with; empty = "
        "<home>/keys/analyst.jwk (generated on first use, mode 0600)",
    )
    analyst_trusted_jwks: str = _setting(
        "",
        "JWKS of analysts' keys: only their signature makes a contain 'approved'; empty = "
        "<home>/keys/analysts.jwks.json (the local analyst key is added on first use)",
    )

    # --- Responders (`custos respond`) ------------------------------------------------------------
    responder_group: str = _setting("custos-responders", "Consumer group of the responders")
    responder_id: str = _setting("custos-responder", "Name responders sign their answers with")
    responder_adapters: str = _setting(
        "custos-broker", "Comma-separated adapters: custos-broker, vault, oauth, ssf, webhook"
    )
    responder_attempts: int = _setting(4, "Tries per request before a command fails (5xx, timeout)")
    responder_backoff_s: float = _setting(0.2, "First retry delay; doubles on every retry")
    responder_state_dir: str = _setting(
        "", "Stored final responses (SQLite); empty = <home>/responder"
    )
    quarantine_deadletter_topic: str = _setting(
        "custos.quarantine.deadletter", "Commands refused or failed, with the original bytes"
    )
    webhook_url: str = _setting("", "Webhook adapter: where to POST the signed command")
    webhook_secret: str = _setting("", "Webhook adapter: HMAC-SHA256 key", secret=True)
    vault_addr: str = _setting("", "Vault adapter: Vault address, e.g. https://127.0.0.1:8200")
    vault_token: str = _setting("", "Vault adapter: token allowed to revoke", secret=True)
    vault_namespace: str = _setting("", "Vault adapter: namespace (Vault Enterprise)")
    vault_lease_prefixes: str = _setting(
        "", "Vault adapter: comma-separated lease prefixes to revoke, {identity} filled in"
    )
    oauth_revocation_url: str = _setting("", "OAuth adapter: RFC 7009 revocation endpoint")
    oauth_client_id: str = _setting("", "OAuth adapter: client id (HTTP Basic)")
    oauth_client_secret: str = _setting("", "OAuth adapter: client secret", secret=True)
    ssf_receiver_url: str = _setting("", "SSF adapter: RFC 8935 push endpoint of the receiver")
    ssf_audience: str = _setting("", "SSF adapter: aud of the SETs (the receiver)")
    ssf_issuer: str = _setting("https://custos.invalid", "SSF adapter: iss of the SETs")
    ssf_key_file: str = _setting(
        "", "SSF adapter: private JWK signing the SETs; empty = <home>/keys/ssf.jwk"
    )

    # --- Alert outputs (`custos outputs run`) ---------------------------------------------------
    outputs_file: str = _setting(
        "",
        "YAML naming the alert outputs (PagerDuty, Slack, Teams, syslog CEF, Splunk HEC) and "
        "their settings; secrets by *_env / *_file (docs/OUTPUTS.md); empty = none",
    )

    # --- Audit (`custos audit`) ----------------------------------------------------------------
    audit_topic: str = _setting(
        "custos.audit", "The tamper-evident log (one partition, kept forever)"
    )
    audit_checkpoints_topic: str = _setting(
        "custos.audit.checkpoints", "Signed checkpoints, apart from the log"
    )
    audit_origin: str = _setting("custos.local/audit", "Name of the log in its checkpoints")
    auditor_group: str = _setting("custos-auditor", "Consumer group of the auditor")
    audit_checkpoint_records: int = _setting(100, "Sign a checkpoint every this many records")
    audit_checkpoint_s: float = _setting(10.0, "... or this many seconds, whichever comes first")

    # --- Model provenance (`custos models`) -------------------------------------------------
    models_dir: str = _setting(
        str(REPO_ROOT / "models"), "Model registry: signed versions, promoted.json, keys/"
    )
    model_name: str = _setting("detector", "Registry name of the shared detector the worker runs")
    model_signing_key: str = _setting(
        "",
        "Ed25519 PEM that `custos models train/sign` signs with; empty = "
        "<home>/keys/model-signing.pem (generated on first use, mode 0600)",
    )
    model_trusted_keys: str = _setting(
        "",
        "Comma-separated public PEMs trusted to sign models, besides <models_dir>/keys/*.pub.pem",
    )
    model_trust_local_key: bool = _setting(
        True,
        "Also trust the public half of model_signing_key (development: a data scientist's "
        "notebook publishes, the local worker accepts); set false in production",
    )
    model_warmup_events: int = _setting(
        10_000,
        "A worker starting without saved state scores this many events with the built-in cold "
        "start before adopting a trained model (a trained detector expects mature baselines)",
    )
    models_topic: str = _setting(
        "custos.models", "Control topic: model promotions and rollbacks the worker hot-swaps"
    )
    agent_models_topic: str = _setting(
        "custos.agent-models", "Control topic: agent model registrations, approvals, revocations"
    )
    feedback_topic: str = _setting(
        "custos.feedback",
        "Analyst feedback keyed by identity (confirm, false positive, release, suppress); "
        "as many partitions as the input topics",
    )
    reports_topic: str = _setting(
        "custos.reports",
        "Services' own audited events: configuration at start, model loaded / refused",
    )

    # --- Credential broker (`custos broker`) ------------------------------------------------------
    broker_host: str = _setting("127.0.0.1", "Credential broker HTTP address (loopback only)")
    broker_port: int = _setting(8787, "Credential broker HTTP port")
    broker_state_dir: str = _setting(
        "", "Signing key, API token and credential database; empty = <home>/credentials"
    )
    broker_token: str = _setting(
        "",
        "Bearer token for the broker's privileged calls (issue, revoke-all, block); empty = "
        "generated on first run into <broker_state_dir>/api-token (mode 0600)",
        secret=True,
    )
    credential_ttl_s: float = _setting(
        300.0, "Lifetime of an ephemeral task credential unless its step ends sooner"
    )
    credential_max_ttl_s: float = _setting(3600.0, "Upper bound for a requested lifetime")
    rejections_topic: str = _setting(
        "agent.events", "Where rejected credential uses go as OCSF events (detection input)"
    )

    @property
    def managed_broker(self) -> bool:
        """True when Custos runs the broker itself (no CUSTOS_BOOTSTRAP given)."""
        return not self.bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def command_key_path(self) -> Path:
        if self.command_key_file:
            return Path(self.command_key_file).expanduser()
        return self.home_path / "keys" / "commands.jwk"

    @property
    def command_jwks_path(self) -> Path:
        if self.command_trusted_jwks:
            return Path(self.command_trusted_jwks).expanduser()
        return self.command_key_path.with_suffix(".jwks.json")

    @property
    def analyst_key_path(self) -> Path:
        if self.analyst_key_file:
            return Path(self.analyst_key_file).expanduser()
        return self.home_path / "keys" / "analyst.jwk"

    @property
    def analyst_jwks_path(self) -> Path:
        if self.analyst_trusted_jwks:
            return Path(self.analyst_trusted_jwks).expanduser()
        return self.home_path / "keys" / "analysts.jwks.json"

    @property
    def responder_state_path(self) -> Path:
        if self.responder_state_dir:
            return Path(self.responder_state_dir).expanduser()
        return self.home_path / "responder"

    @property
    def broker_state_path(self) -> Path:
        return (
            Path(self.broker_state_dir).expanduser()
            if self.broker_state_dir
            else self.home_path / "credentials"
        )

    @property
    def model_signing_key_path(self) -> Path:
        if self.model_signing_key:
            return Path(self.model_signing_key).expanduser()
        return self.home_path / "keys" / "model-signing.pem"

    @property
    def broker_url(self) -> str:
        return f"http://{self.broker_host}:{self.broker_port}"

    @property
    def kafka_libs_path(self) -> Path:
        return (
            Path(self.kafka_libs).expanduser()
            if self.kafka_libs
            else self.home_path / "kafka" / "libs"
        )

    def kafka_auth(self) -> KafkaAuth:
        """How this process authenticates to Kafka (the secure managed broker, or settings).

        On a secure managed broker the principal's password is the file ``custos kafka up``
        wrote for it (``<home>/kafka/principals/<name>.password``, mode 0600); explicit
        ``sasl_username`` / ``sasl_password`` win.
        """
        if self.managed_broker and self.kafka_secure:
            principal = self.sasl_username or self.kafka_principal or "admin"
            password = self.sasl_password
            if not password:
                path = self.kafka_security_path / "principals" / f"{principal}.password"
                try:
                    password = path.read_text().strip()
                except OSError:
                    raise ConfigError(
                        f"no Kafka password for principal {principal!r} at {path}: run "
                        "`custos kafka up` (it creates the principals) or set "
                        "CUSTOS_SASL_USERNAME / CUSTOS_SASL_PASSWORD"
                    ) from None
            return KafkaAuth("SASL_SSL", "SCRAM-SHA-512", principal, password,
                             str(self.kafka_security_path / "tls" / "ca.pem"))  # fmt: skip
        return KafkaAuth(self.security_protocol, self.sasl_mechanism, self.sasl_username,
                         self.sasl_password, self.ssl_ca_file)  # fmt: skip

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every confluent-kafka client Custos creates."""
        conf = {"bootstrap.servers": self.bootstrap_servers}
        auth = self.kafka_auth()
        if auth.protocol != "PLAINTEXT":
            conf["security.protocol"] = auth.protocol
        if auth.username:
            conf.update({"sasl.mechanisms": auth.mechanism, "sasl.username": auth.username,
                         "sasl.password": auth.password})  # fmt: skip
        if auth.ca_file:
            conf["ssl.ca.location"] = auth.ca_file
        return conf

    def as_principal(self, name: str) -> Settings:
        """These settings for a process running as Kafka principal ``name`` (unless set)."""
        if self.kafka_principal or self.sasl_username:
            return self
        return dataclasses.replace(self, kafka_principal=name)

    @property
    def kafka_security_path(self) -> Path:
        return self.home_path / "kafka" / "security"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``CUSTOS_*`` variables (``os.environ`` by default); ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = env_var(f.name)
            if var in env:
                values[f.name] = _coerce(f.name, f.type, env[var])
        values.update(overrides)
        return cls(**values)

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(name, environment variable, effective value, doc) per setting; secrets masked."""
        rows = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = MASK if f.metadata.get("secret") and value else str(value)
            rows.append((f.name, env_var(f.name), shown, str(f.metadata.get("doc", ""))))
        return rows


@dataclass(frozen=True, slots=True)
class KafkaAuth:
    """Client security for Kafka: protocol, SASL login, CA file (empty strings: none)."""

    protocol: str
    mechanism: str
    username: str
    password: str
    ca_file: str

    def ssl_context(self) -> Any:
        """For aiokafka (faust, control-topic readers): None unless TLS is on."""
        if "SSL" not in self.protocol:
            return None
        import ssl

        return ssl.create_default_context(cafile=self.ca_file or None)


def env_var(name: str) -> str:
    return "CUSTOS_" + name.upper()


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ConfigError(f"{env_var(name)}={raw!r} is not a valid {kind}") from exc
    return raw
