"""Lifecycle of the single-node KRaft broker Custos runs from Maven Central jars.

``custos kafka up`` fetches the jars once (Maven, ``infra/kafka/pom.xml``), formats storage on
first start, starts ``kafka.Kafka`` in the background and waits until it answers metadata
requests. Data and logs live under ``<home>/kafka`` and survive restarts.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TextIO

from pipeline.config import REPO_ROOT, Settings
from pipeline.errors import KafkaError
from pipeline.kafka.clients import make_admin

INFRA = REPO_ROOT / "infra" / "kafka"
POM = INFRA / "pom.xml"
PROPERTIES_TEMPLATE = INFRA / "server.properties.template"
LOG4J = INFRA / "log4j2.properties"
JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    answering: bool
    bootstrap: str
    topics: int | None
    data_dir: Path

    def describe(self) -> str:
        if not self.running and not self.answering:
            return f"stopped (data in {self.data_dir})"
        who = f"pid {self.pid}" if self.pid else "not started by custos"
        state = f"answering, {self.topics} topics" if self.answering else "not answering yet"
        return f"running ({who}) on {self.bootstrap}: {state}; data in {self.data_dir}"


class Broker:
    """The managed broker for one :class:`Settings` (its home directory and ports)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home_path / "kafka"
        self.libs = settings.kafka_libs_path
        self.data_dir = self.root / "data"
        self.logs_dir = self.root / "logs"
        self.properties = self.root / "server.properties"
        self.pid_file = self.root / "broker.pid"
        self.stdout_file = self.logs_dir / "kafkaServer.out"
        self.server_log = self.logs_dir / "server.log"

    # --- jars -------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Copy the broker's runtime classpath from Maven once; re-copy if the pom changes."""
        if self._jars_current():
            return self.libs
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("Maven (mvn) is not on PATH: it is needed once to fetch Kafka's jars")
        staging = self.libs.with_name(self.libs.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise KafkaError(f"Maven could not fetch Kafka's jars ({' '.join(cmd)}):\n{tail}")
        (staging / ".pom-sha256").write_text(digest)
        # Swap in atomically so a crash mid-download never leaves a half classpath behind.
        shutil.rmtree(self.libs, ignore_errors=True)
        self.libs.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(self.libs)
        return self.libs

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise KafkaError("java is not on PATH (Kafka 4.x needs Java 17 or later)")
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        m = re.search(r'version "(\d+)', out.stderr + out.stdout)
        if m is None or int(m.group(1)) < 17:
            raise KafkaError(f"Kafka 4.x needs Java 17+, found: {out.stderr.splitlines()[:1]}")
        return java

    def _jvm(self, java: str, main: str, *args: str, heap: str | None = None) -> list[str]:
        cmd = [java]
        if heap:
            cmd += [f"-Xmx{heap}", f"-Xms{heap}", *JVM_FLAGS]
        cmd += [
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", str(self.libs / "*"), main, *args,
        ]  # fmt: skip
        return cmd

    def tool_jvm(self) -> list[str]:
        """``java -cp <cached jars>`` for one of Kafka's command-line tools (fetching the jars
        once, like ``up``); log4j's default (errors to the console) is right for a tool."""
        java = self._java()
        if not self._jars_current() and self.pid() is not None:
            # Swapping the classpath under a running broker would pull jars from under it.
            raise KafkaError("the running broker's jars predate this version's pom (no "
                             "kafka-tools yet): `custos kafka down && custos kafka up` "
                             "fetches them")  # fmt: skip
        self.ensure_jars()
        return [java, "-Xmx512m", "-cp", str(self.libs / "*")]

    def _jars_current(self) -> bool:
        marker = self.libs / ".pom-sha256"
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        return marker.exists() and marker.read_text().strip() == digest

    # --- storage ----------------------------------------------------------------------------
    def render_properties(self, passwords: dict[str, str] | None = None) -> str:
        s = self.settings
        text = Template(PROPERTIES_TEMPLATE.read_text()).substitute(
            host=s.kafka_host,
            port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            log_dirs=self.data_dir,
        )
        if passwords is None:
            return text
        from pipeline.kafka.security import server_properties

        # Later keys win in a Java properties file: the secure listeners replace the plain ones.
        return text + "\n" + server_properties(s, passwords)

    def ensure_storage(self, java: str) -> None:
        """Write server.properties; format the log directory only if it never was."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        passwords = None
        if self.settings.kafka_secure:
            from pipeline.kafka.security import ensure_secrets

            passwords = ensure_secrets(self.settings)
        # The secure form holds the admin password: readable by its owner only.
        self.properties.unlink(missing_ok=True)
        fd = os.open(self.properties, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.render_properties(passwords))
        marker = self.root / "security"
        formatted = (self.data_dir / "meta.properties").exists()
        if formatted:
            was_secure = (marker / "formatted-secure").exists()
            if was_secure != self.settings.kafka_secure:
                raise KafkaError(
                    f"{self.data_dir} was formatted {'with' if was_secure else 'without'} "
                    f"CUSTOS_KAFKA_SECURE; {'set it again' if was_secure else 'remove the data'}"
                    " (the admin login is created when the storage is formatted)"
                )
            return
        cluster_id = new_cluster_id()
        extra: list[str] = []
        if passwords is not None:  # the broker's own login must exist before it starts
            extra = ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={passwords['admin']}]"]
        cmd = self._jvm(
            java, "kafka.tools.StorageTool", "format",
            "-t", cluster_id, "-c", str(self.properties), "--ignore-formatted", *extra,
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaError(f"formatting {self.data_dir} failed:\n{proc.stdout}{proc.stderr}")
        if passwords is not None:
            marker.mkdir(parents=True, exist_ok=True, mode=0o700)
            (marker / "formatted-secure").write_text(cluster_id)

    # --- process ----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid) or not _is_kafka(pid):
            return None  # stale pid file, or the pid was reused by another process
        return pid

    def answering(self, timeout: float = 2.0) -> int | None:
        """Number of topics if the broker answers a metadata request, else None."""
        admin = make_admin(self.settings, **{"socket.timeout.ms": 2000})
        try:
            md = admin.list_topics(timeout=timeout)
        except Exception:  # any librdkafka error here just means "not answering yet"
            return None
        # After a restart the broker answers before it leads its partitions again; clients
        # then get NOT_LEADER errors. Ready means every partition has a leader.
        for topic in md.topics.values():
            if topic.error is not None or any(p.leader < 0 for p in topic.partitions.values()):
                return None
        return len([t for t in md.topics if not t.startswith("__")])

    def status(self) -> BrokerStatus:
        pid = self.pid()
        topics = self.answering()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            answering=topics is not None,
            bootstrap=self.settings.bootstrap_servers,
            topics=topics,
            data_dir=self.data_dir,
        )

    def up(self) -> tuple[bool, float]:
        """Start the broker if needed. Returns (started_now, seconds until it answered)."""
        if not self.settings.managed_broker:
            raise KafkaError(f"CUSTOS_BOOTSTRAP={self.settings.bootstrap}: not managed here")
        t0 = time.monotonic()
        if self.settings.kafka_secure:  # logins and TLS files first: even the probe needs them
            from pipeline.kafka.security import ensure_secrets

            ensure_secrets(self.settings)
        if self.pid() is not None or self.answering() is not None:
            self._secure()  # principals and ACLs are brought to the plan on every `up`
            return False, 0.0
        self.ensure_jars()
        java = self._java()
        self.ensure_storage(java)
        cmd = self._jvm(java, "kafka.Kafka", str(self.properties), heap=self.settings.kafka_heap)
        with open(self.stdout_file, "ab") as out:
            # A new session: the broker outlives this command and ignores its Ctrl-C.
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.root,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        deadline = t0 + self.settings.kafka_start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise KafkaError(
                    f"the broker exited with code {proc.returncode} while starting; "
                    f"see {self.server_log} and {self.stdout_file}:\n{self.tail(20)}"
                )
            if self.answering(timeout=1.0) is not None:
                self._secure()
                return True, time.monotonic() - t0
            time.sleep(0.3)
        raise KafkaError(
            f"the broker did not answer on {self.settings.bootstrap_servers} within "
            f"{self.settings.kafka_start_timeout_s:.0f} s; see {self.server_log}:\n{self.tail(20)}"
        )

    def _secure(self) -> None:
        if self.settings.kafka_secure:
            from pipeline.kafka.security import apply_acls, ensure_secrets

            apply_acls(self.settings, ensure_secrets(self.settings))

    def down(self, timeout: float = 60.0) -> bool:
        """Stop the broker cleanly (SIGTERM = controlled shutdown). False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def follow(self, poll_s: float = 0.5) -> Iterator[str]:
        """Lines appended to the server log from now on (``custos kafka logs -f``); endless.

        The log is opened here, not at the first ``next``, so nothing written in between is lost.
        """
        fh = open(self.server_log, errors="replace")  # closed by _lines
        fh.seek(0, 2)
        return self._lines(fh, poll_s)

    @staticmethod
    def _lines(fh: TextIO, poll_s: float) -> Iterator[str]:
        with fh:
            while True:
                line = fh.readline()
                if line:
                    yield line
                else:
                    time.sleep(poll_s)

    def tail(self, lines: int = 50) -> str:
        for path in (self.server_log, self.stdout_file):
            if path.exists():
                with open(path, errors="replace") as fh:
                    return "".join(deque(fh, maxlen=lines))
        return f"(no log yet in {self.logs_dir})"


def new_cluster_id() -> str:
    """16 random bytes, base64url without padding, as Kafka's own ``Uuid.randomUuid``.

    Like Kafka, never one starting with '-': the storage tool's argument parser would read
    it as an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (not Linux): trust the pid file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (our own Popen, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return True
