"""An AgentDojo world: a fleet of tool-using agents and prompt-injection campaigns against it.

The tools, their arguments, the benign tasks and the attacker goals come from the public
agent-security benchmark AgentDojo (https://github.com/ethz-spylab/agentdojo, MIT licence): its
four v1 suites - ``workspace`` (email, calendar, cloud drive), ``travel``, ``banking`` and
``slack``. The events follow only the public input contract ``docs/EVENTS.md`` (OCSF 1.8 API
Activity 6003 for agents, Authentication 3002 for their human owners); the shape of the traffic is
that of a plausible deployment of AgentDojo-style agents, not of any detector.

How the catalogue was derived
-----------------------------
``agentdojo_catalogue.json`` holds derived facts, not code: per suite the tool names and parameters
(``src/agentdojo/default_suites/v1/tools/*.py`` and ``<suite>/task_suite.py``), which parameters
name a counterparty (IBAN, email recipient, slack user / channel, file id, url, hotel), each user
task's ground-truth tool sequence (the ``function`` names of ``UserTaskN.ground_truth``, in order,
from ``<suite>/user_tasks.py``) and each injection task's goal (paraphrased) and ground-truth calls
(``<suite>/injection_tasks.py``). The upstream repository was not reachable from the build machine,
so the files were read in two public forks of it; the JSON ``source`` header names the forks,
commits and files, and says which parts were completed from the published upstream suites.

The world
---------
- **Tenants** (4) with a home timezone, country, a few agent hosts (``src_endpoint.ip``), a slack
  workspace with channels and members, a shared cloud drive whose files carry a
  confidentiality (Not Confidential / Confidential / Secret), and human owners.
- **Agents** (``agents``): each deployed for one AgentDojo suite (about a fifth for two), on behalf
  of one owner (``unmapped.delegated_by``); working hours of the owner's timezone, or 24/7 for
  about one in six; a stable host, tool-manifest and system-prompt hash; one of four models
  (names and digests of no public registry); a fleet-wide upgrade of two models' versions rolls
  out around the middle of the window for most of their agents.
- **Tasks**: one ``actor.session.uid`` per task; the calls are the ground-truth tool sequence of one
  of the suite's user tasks (each agent has its own preferences among them), with small
  variations (a retried failure, an abandoned task). Arguments come from per-agent pools of usual
  counterparties (payees, contacts, channels, slack users, files, websites, travel contacts)
  that grow slowly: a new payee about once a week, a new colleague or client every few days,
  legitimate invitations of new colleagues to slack. Sizes are log-normal per tool and agent
  (file reads follow the file's size). Each task gets a short-lived credential scoped to it
  (refreshed when a task outlives it); about 1% of calls fail.
- **Owners** log on (3002, SSO with MFA) on their working days.

Campaigns (``KINDS``, round-robin; each on one victim agent, on days 3-13 of 14 scaled to
``days``): an agent whose task content was prompt-injected performs an AgentDojo injection task
with its own valid credential, inside an otherwise normal task:

- ``injected_payment`` (banking injection tasks 0-5, 8): a payment to, or a standing-order redirect
  to, an attacker IBAN the agent never paid;
- ``injected_mail_exfil`` (workspace 3-6): reads mail, sends it to an attacker address never
  written to (sometimes then deletes the sent mail);
- ``outsider_invite`` (slack 5): invites an outside user to the slack workspace and adds them to a
  channel (sometimes removes them again);
- ``bulk_read_then_send`` (workspace 6-8 at scale): 15-60 reads of files / mail through the agent's
  usual read tools, 25-60x its usual bytes per call, then one send to a new address;
- ``cross_suite_tools``: the injection task of a suite the agent is not deployed for.

Only the malicious calls are labelled (``event_labels``); one :class:`LabelRow` per campaign (the
victim, first / last malicious event). Same arguments give the same world: all randomness comes
from numpy Generators seeded from ``seed``; no wall clock is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from pipeline.simulate.labels import EventLabel, LabelRow, write_event_labels, write_labels

__all__ = ["DEFAULT_START_MS", "KINDS", "World", "build_world", "catalogue", "write_world"]

DEFAULT_START_MS: Final = 1_790_812_800_000  # 2026-10-01 00:00 UTC
_S: Final = 1000
_MIN: Final = 60_000
_HOUR: Final = 3_600_000
_DAY: Final = 86_400_000

KINDS: Final = (
    "injected_payment",
    "injected_mail_exfil",
    "outsider_invite",
    "bulk_read_then_send",
    "cross_suite_tools",
)
SUITES: Final = ("workspace", "travel", "banking", "slack")

_CATALOGUE_PATH: Final = Path(__file__).with_name("agentdojo_catalogue.json")


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """The vendored AgentDojo catalogue (tools, user tasks, injection tasks per suite)."""
    with _CATALOGUE_PATH.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@dataclass(frozen=True)
class World:
    """A generated world: events (sorted by ``time``), campaign labels and event labels."""

    events: list[dict[str, Any]]
    labels: list[LabelRow]
    event_labels: list[EventLabel]
    identities: int
    days: float


# ----------------------------------------------------------------------------- static world

_EMAIL_TOOLS: Final = frozenset(
    {
        "send_email",
        "delete_email",
        "get_unread_emails",
        "get_sent_emails",
        "get_received_emails",
        "get_draft_emails",
        "search_emails",
        "search_contacts_by_name",
        "search_contacts_by_email",
    }
)
_CALENDAR_TOOLS: Final = frozenset(
    {
        "get_current_day",
        "search_calendar_events",
        "get_day_calendar_events",
        "create_calendar_event",
        "cancel_calendar_event",
        "reschedule_calendar_event",
        "add_calendar_event_participants",
    }
)
_READ_HEADS: Final = frozenset({"get", "search", "list", "read", "check"})
_CREATE_HEADS: Final = frozenset({"send", "create", "invite", "schedule", "reserve", "post"})
_UPDATE_HEADS: Final = frozenset({"update", "append", "reschedule", "add", "share"})
_DELETE_HEADS: Final = frozenset({"delete", "cancel", "remove"})


def _service(suite: str, tool: str) -> str:
    if suite == "workspace":
        if tool in _EMAIL_TOOLS:
            return "workspace.email"
        if tool in _CALENDAR_TOOLS:
            return "workspace.calendar"
        return "workspace.drive"
    if suite == "slack":
        return "web" if tool in ("get_webpage", "post_webpage") else "slack"
    if suite == "travel":
        if tool == "send_email":
            return "travel.email"
        if tool in _CALENDAR_TOOLS:
            return "travel.calendar"
        return "travel"
    return "banking"


def _activity(tool: str) -> int:
    head = tool.split("_", 1)[0]
    if head in _READ_HEADS:
        return 2
    if head in _CREATE_HEADS:
        return 1
    if head in _UPDATE_HEADS:
        return 3
    if head in _DELETE_HEADS:
        return 4
    return 99


# median bytes_in (response to the agent), bytes_out (request), log-sigma; by tool
_BYTES: Final[dict[str, tuple[float, float, float]]] = {
    "get_most_recent_transactions": (9_000, 220, 0.6),
    "get_scheduled_transactions": (2_400, 180, 0.5),
    "read_file": (1_800, 200, 0.9),
    "send_money": (260, 520, 0.3),
    "schedule_transaction": (260, 560, 0.3),
    "update_scheduled_transaction": (240, 420, 0.3),
    "search_emails": (11_000, 300, 1.0),
    "get_unread_emails": (24_000, 160, 0.9),
    "get_received_emails": (42_000, 160, 0.9),
    "get_sent_emails": (30_000, 160, 0.9),
    "get_draft_emails": (6_000, 160, 0.8),
    "send_email": (420, 2_200, 0.9),
    "list_files": (6_500, 150, 0.6),
    "get_webpage": (26_000, 260, 1.1),
    "post_webpage": (300, 3_000, 0.9),
    "read_channel_messages": (5_500, 220, 0.9),
    "read_inbox": (4_200, 200, 0.9),
    "send_direct_message": (240, 900, 0.7),
    "send_channel_message": (240, 1_100, 0.7),
    "get_user_information": (1_100, 150, 0.3),
    "get_flight_information": (3_500, 260, 0.6),
}
_BYTES_BY_ACTIVITY: Final[dict[int, tuple[float, float, float]]] = {
    1: (300, 900, 0.6),
    2: (2_800, 260, 0.8),
    3: (260, 700, 0.6),
    4: (200, 260, 0.4),
    99: (400, 400, 0.6),
}

_FIRST: Final = (
    "emma",
    "liam",
    "olivia",
    "noah",
    "ava",
    "lucas",
    "mia",
    "leo",
    "sofia",
    "omar",
    "yuki",
    "hana",
    "ravi",
    "priya",
    "chen",
    "mei",
    "jonas",
    "lena",
    "mateo",
    "chloe",
    "amir",
    "zara",
    "felix",
    "ines",
    "kofi",
    "nia",
    "sven",
    "ingrid",
    "diego",
    "lucia",
    "tariq",
    "aisha",
)
_LAST: Final = (
    "johnson",
    "smith",
    "garcia",
    "martin",
    "lee",
    "brown",
    "tanaka",
    "sato",
    "patel",
    "nguyen",
    "kim",
    "muller",
    "rossi",
    "dubois",
    "silva",
    "novak",
    "larsen",
    "okafor",
    "haddad",
    "costa",
    "fischer",
    "moreau",
    "kowalski",
    "ito",
    "mendes",
    "walsh",
    "berg",
    "ahmed",
    "lopez",
    "chan",
)
_EXT_DOMAINS: Final = (
    "clientcorp.com",
    "mainsail-tech.com",
    "industry-network.com",
    "gmail.com",
    "outlook.com",
    "hotmail.com",
    "acme-partners.io",
    "lumenlaw.eu",
    "harbor-audit.com",
    "yahoo.com",
)
_ATTACKER_DOMAINS: Final = (
    "gmail.com",
    "proton.me",
    "mail-secure-inbox.com",
    "outlook.com",
    "tutanota.com",
    "fastmail-drop.net",
)
_IBAN_CC: Final = ("DE", "GB", "FR", "CH", "NL", "SE", "ES", "IT", "US", "CA")
_CITIES: Final = ("Paris", "London", "Tokyo", "Los Angeles", "Zurich", "New York")
_HOTELS: Final = (
    "Le Marais Boutique",
    "City Hub",
    "Good Night",
    "Luxury Palace",
    "Montmartre Suites",
    "Cozy Stay",
    "Mom's Home",
    "London Luxury",
    "Covent Garden Retreat",
    "Harbor Inn",
    "Shinjuku Garden",
    "Sunset Boulevard Suites",
    "Lakeside Zurich",
    "Central Park Lodge",
)
_RESTAURANTS: Final = (
    "Le Baratin",
    "New Asiaway",
    "Breizh Cafe",
    "Bistrot Paul Bert",
    "Chez L'Ami Jean",
    "House of Sushi",
    "Royal Panda",
    "The Yard",
    "China Garden",
    "Miznon",
    "Sushi Zen",
    "Golden Dragon",
    "Trattoria Roma",
    "Green Bowl",
)
_CAR_RENTALS: Final = (
    "SunSet Rent-A-Car",
    "Speedy Rentals",
    "LAX Car Rental",
    "Green Motion",
    "New Car Rental",
    "Paris Rent-a-Car",
    "Eiffel Tower Car Rental",
    "Tokyo Drive",
    "Alpine Cars",
)
_WEBSITES: Final = (
    "www.informations.com",
    "www.restaurant-zurich.com",
    "www.our-company.com",
    "www.dora-website.com",
    "www.eve-blog.com",
    "news.ycombinator.com",
    "www.reuters.com",
    "docs.python.org",
    "www.bbc.com/news",
    "status.cloudprovider.com",
    "www.wikipedia.org",
    "blog.team-offsite.com",
    "www.techcrunch.com",
    "www.ft.com",
    "github.com/releases",
)
_BANK_FILES: Final = (
    "bill-december-2023.txt",
    "landlord-notices.txt",
    "address-change.txt",
    "invoice-q3.pdf",
    "utility-bill.txt",
    "insurance-renewal.txt",
    "subscription-notice.txt",
)
_DRIVE_NAMES: Final = (
    "feedback.xlsx",
    "team-building-activities.docx",
    "recipe-collection.docx",
    "grocery-list.docx",
    "client-meeting-minutes.docx",
    "team-meeting-minutes.docx",
    "vacation-plans.docx",
    "budget-2026.xlsx",
    "sales-projections.xlsx",
    "hiring-plan.docx",
    "quarterly-report.pdf",
    "board-deck.pptx",
    "contract-draft.docx",
    "pricing-model.xlsx",
    "roadmap.md",
    "incident-review.docx",
    "payroll-october.xlsx",
    "customer-list.csv",
    "security-audit.pdf",
    "merger-notes.docx",
    "onboarding-guide.pdf",
    "brand-guidelines.pdf",
)

# (name, versions); the last version is the one rolled out mid-window, if there are two
_MODELS: Final = (
    ("nimbus-pro", ("2026-07-01", "2026-09-15")),
    ("sable-instruct", ("4.0", "4.1")),
    ("aster-chat", ("2.3",)),
    ("corvid-large", ("2026.08",)),
)
_MODEL_WEIGHTS: Final = (0.35, 0.3, 0.2, 0.15)


@dataclass(frozen=True)
class _Tenant:
    name: str
    domain: str
    tz: float  # hours east of UTC
    country: str
    environment: str
    suite_weights: tuple[float, float, float, float]  # in SUITES order
    hosts: tuple[str, ...]


_TENANTS: Final = (
    _Tenant(
        "bluesparrowtech",
        "bluesparrowtech.com",
        1.0,
        "DE",
        "prod-eu",
        (0.55, 0.05, 0.1, 0.3),
        ("10.20.4.11", "10.20.4.12", "10.20.7.30"),
    ),
    _Tenant(
        "northbank",
        "northbank-finance.com",
        -5.0,
        "US",
        "prod-us",
        (0.3, 0.05, 0.55, 0.1),
        ("10.31.2.5", "10.31.2.6"),
    ),
    _Tenant(
        "wanderly",
        "wanderly.travel",
        -8.0,
        "US",
        "prod-us",
        (0.15, 0.55, 0.05, 0.25),
        ("10.42.1.20", "10.42.1.21", "10.42.9.3"),
    ),
    _Tenant(
        "kumo",
        "kumo-labs.io",
        9.0,
        "JP",
        "prod-ap",
        (0.3, 0.15, 0.2, 0.35),
        ("10.53.0.8", "10.53.0.9"),
    ),
)
_TENANT_WEIGHTS: Final = (0.32, 0.26, 0.2, 0.22)


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _hex(rng: np.random.Generator, n: int = 12) -> str:
    return f"{int(rng.integers(0, 2**62)):016x}"[:n]


def _person(rng: np.random.Generator) -> str:
    return f"{_FIRST[int(rng.integers(len(_FIRST)))]}.{_LAST[int(rng.integers(len(_LAST)))]}"


def _iban(rng: np.random.Generator, cc: str | None = None) -> str:
    cc = cc or _IBAN_CC[int(rng.integers(len(_IBAN_CC)))]
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, size=20))
    return f"{cc}{digits}"


# ----------------------------------------------------------------------------- pools


class _Pool:
    """Usual counterparties of one agent: Zipf-weighted, growing at scheduled arrival times."""

    __slots__ = ("_arrivals", "_make", "items")

    def __init__(
        self,
        items: list[str],
        make: Callable[[np.random.Generator], str],
        arrivals: list[int],
    ) -> None:
        self.items = items
        self._make = make
        self._arrivals = arrivals  # ascending ms; the first pick after each uses a new item

    def pick(self, rng: np.random.Generator, t: int) -> str:
        if self._arrivals and self._arrivals[0] <= t:
            self._arrivals.pop(0)
            return self.add(self._make(rng))
        n = len(self.items)
        w = 1.0 / np.arange(1, n + 1) ** 0.9
        return self.items[int(rng.choice(n, p=w / w.sum()))]

    def pick_many(self, rng: np.random.Generator, t: int, k: int) -> list[str]:
        out: list[str] = []
        for _ in range(k):
            x = self.pick(rng, t)
            if x not in out:
                out.append(x)
        return out

    def add(self, item: str) -> str:
        if item not in self.items:
            self.items.append(item)
        return item


def _arrivals(rng: np.random.Generator, start: int, end: int, per_day: float) -> list[int]:
    n = int(rng.poisson(per_day * (end - start) / _DAY))
    return sorted(int(x) for x in rng.uniform(start, end, size=n))


@dataclass
class _File:
    fid: str
    name: str
    size: int
    conf: int


@dataclass
class _TenantState:
    tenant: _Tenant
    index: int
    humans: list[str]  # local parts
    slack_users: list[str]
    channels: list[str]
    files: list[_File]
    next_file: int = 0

    def file_uid(self, f: _File) -> str:
        return f"file:{self.tenant.name}/{f.fid}"


_CHANNEL_CONF: Final = {"private": 2, "leadership": 3, "finance": 2, "External_0": 1}


@dataclass
class _Agent:
    idx: int
    uid: str
    name: str
    tenant: _TenantState
    owner: str  # owner's local part
    suites: tuple[str, ...]
    tz: float
    always_on: bool
    tasks_per_day: float
    ip: str
    model: tuple[str, str, str]  # name, version before, version after
    upgrade_ms: int | None
    manifest_hash: str
    prompt_hash: str
    byte_scale: float
    secret_reader: bool
    task_weights: dict[str, np.ndarray]
    pools: dict[str, _Pool] = field(default_factory=dict)
    own_iban: str = ""
    file_weights: np.ndarray = field(default_factory=lambda: np.ones(1))
    sched_ids: list[int] = field(default_factory=list)
    history: dict[str, list[int]] = field(default_factory=dict)  # benign bytes_in per tool

    def usual_bytes(self, tool: str, fallback: float) -> float:
        seen = self.history.get(tool)
        return float(np.median(seen)) if seen and len(seen) >= 3 else fallback

    @property
    def owner_uid(self) -> str:
        return f"u-{self.tenant.tenant.name}-{self.owner}"

    @property
    def owner_email(self) -> str:
        return f"{self.owner}@{self.tenant.tenant.domain}"


# ----------------------------------------------------------------------------- population


def _build_tenants(rng: np.random.Generator) -> list[_TenantState]:
    out = []
    for i, t in enumerate(_TENANTS):
        humans = sorted({_person(rng) for _ in range(14)})
        extra = {_FIRST[int(j)].capitalize() for j in rng.choice(len(_FIRST), 8, replace=False)}
        slack_users = ["Alice", "Bob", "Charlie", "Eve", *sorted(extra)]
        channels = ["general", "random", "private", "External_0"] + [
            c
            for c in ("eng", "sales", "ops", "finance", "leadership", "support", "design")
            if rng.random() < 0.6
        ]
        files = []
        n_files = int(rng.integers(60, 110))
        for j in range(n_files):
            base = _DRIVE_NAMES[int(rng.integers(len(_DRIVE_NAMES)))]
            name = base if rng.random() < 0.4 else f"{j:03d}-{base}"
            conf = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
            size = int(min(6e6, max(300.0, rng.lognormal(np.log(14_000), 1.1))))
            files.append(_File(str(j), name, size, conf))
        out.append(_TenantState(t, i, humans, slack_users, channels, files, n_files))
    return out


def _manifest(suites: tuple[str, ...]) -> list[str]:
    tools = catalogue()["tools"]
    return sorted(f"{s}.{name}" for s in suites for name in tools[s])


def _build_agents(
    rng: np.random.Generator, tenants: list[_TenantState], n: int, start: int, end: int
) -> list[_Agent]:
    cat = catalogue()
    agents: list[_Agent] = []
    tw = np.array(_TENANT_WEIGHTS)
    # owners: per tenant, the first humans own agents (1-3 agents each, so some share an owner)
    owner_cursor = [0] * len(tenants)
    owner_left = [0] * len(tenants)
    owner_tz: dict[tuple[str, str], float] = {}
    for i in range(n):
        ts = tenants[i % len(tenants)] if i < len(tenants) else tenants[int(rng.choice(4, p=tw))]
        t = ts.tenant
        k = ts.index
        if owner_left[k] == 0:
            owner_cursor[k] = (owner_cursor[k] + 1) % len(ts.humans)
            owner_left[k] = int(rng.integers(1, 4))
        owner_left[k] -= 1
        owner = ts.humans[owner_cursor[k]]
        sw = np.array(t.suite_weights)
        # guarantee every suite appears in small fleets too
        first = SUITES[i % 4] if i < 8 else SUITES[int(rng.choice(4, p=sw / sw.sum()))]
        suites: tuple[str, ...] = (first,)
        if rng.random() < 0.2:
            other = [s for s in SUITES if s != first]
            ow = np.array([t.suite_weights[SUITES.index(s)] for s in other])
            suites = (first, other[int(rng.choice(3, p=ow / ow.sum()))])
        if (t.name, owner) not in owner_tz:  # the owner's timezone, stable per owner
            owner_tz[(t.name, owner)] = (
                t.tz if rng.random() < 0.8 else t.tz + float(rng.choice([-6.0, -1.0, 1.0, 5.0]))
            )
        tz = owner_tz[(t.name, owner)]
        always_on = bool(rng.random() < 0.16)
        tpd = float(np.clip(rng.lognormal(np.log(17.0), 0.6), 3.0, 90.0))
        if always_on:
            tpd *= 1.8
        m = int(rng.choice(len(_MODELS), p=np.array(_MODEL_WEIGHTS)))
        mname, versions = _MODELS[m]
        upgrade_ms: int | None = None
        before = after = versions[0]
        if len(versions) > 1:
            after = versions[1]
            if rng.random() < 0.75:  # most of the fleet gets the rollout, over ~1.5 days
                upgrade_ms = int(start + 0.5 * (end - start) + rng.uniform(0, 1.5) * _DAY)
        short = {"workspace": "ws", "travel": "trv", "banking": "bank", "slack": "slack"}
        uid = f"agt-{t.name}-{short[first]}-{i:03d}"
        weights = {}
        for s in suites:
            names = list(cat["user_tasks"][s])
            w = rng.dirichlet(np.full(len(names), 0.6))
            # legitimate invitations and password changes are rare chores
            for j, nm in enumerate(names):
                calls = cat["user_tasks"][s][nm]
                if "invite_user_to_slack" in calls or "update_password" in calls:
                    w[j] *= 0.04
            weights[s] = w / w.sum()
        a = _Agent(
            idx=i,
            uid=uid,
            name=f"{first}-assistant-{owner.split('.')[0]}",
            tenant=ts,
            owner=owner,
            suites=suites,
            tz=tz,
            always_on=always_on,
            tasks_per_day=tpd,
            ip=t.hosts[int(rng.integers(len(t.hosts)))],
            model=(mname, before, after),
            upgrade_ms=upgrade_ms,
            manifest_hash=_sha(json.dumps([t.name, _manifest(suites)])),
            prompt_hash=_sha(f"{t.name}/{uid}/system-prompt/{_hex(rng)}"),
            byte_scale=float(rng.lognormal(0.0, 0.3)),
            secret_reader=bool(rng.random() < 0.2),
            task_weights=weights,
        )
        _init_pools(a, rng, start, end)
        agents.append(a)
    return agents


def _init_pools(a: _Agent, rng: np.random.Generator, start: int, end: int) -> None:
    ts = a.tenant
    dom = ts.tenant.domain

    def colleague(r: np.random.Generator) -> str:
        if r.random() < 0.6:
            return f"{_person(r)}@{dom}"
        return f"{_person(r)}@{_EXT_DOMAINS[int(r.integers(len(_EXT_DOMAINS)))]}"

    contacts = [f"{h}@{dom}" for h in ts.humans if h != a.owner]
    rng.shuffle(contacts)
    contacts = contacts[: int(rng.integers(4, 10))] + [
        colleague(rng) for _ in range(int(rng.integers(2, 8)))
    ]
    a.pools["contacts"] = _Pool(contacts, colleague, _arrivals(rng, start, end, 0.3))
    a.own_iban = _iban(rng, "US" if ts.tenant.country == "US" else None)
    payees = [_iban(rng) for _ in range(int(rng.integers(3, 9)))]
    a.pools["payees"] = _Pool(payees, _iban, _arrivals(rng, start, end, 1 / 7))
    a.sched_ids = [int(x) for x in rng.choice(np.arange(1, 40), 4, replace=False)]
    ch = list(ts.channels)
    rng.shuffle(ch)
    usual_ch = ["general", *[c for c in ch if c != "general"][: int(rng.integers(2, 6))]]
    a.pools["channels"] = _Pool(
        usual_ch,
        lambda r: ts.channels[int(r.integers(len(ts.channels)))],
        _arrivals(rng, start, end, 1 / 14),
    )
    su = list(ts.slack_users)
    rng.shuffle(su)
    a.pools["slack_users"] = _Pool(
        su[: int(rng.integers(3, 8))],
        lambda r: ts.slack_users[int(r.integers(len(ts.slack_users)))],
        _arrivals(rng, start, end, 1 / 10),
    )
    a.pools["urls"] = _Pool(
        [_WEBSITES[int(j)] for j in rng.choice(len(_WEBSITES), 5, replace=False)],
        lambda r: f"www.{_LAST[int(r.integers(len(_LAST)))]}-{int(r.integers(100))}.com",
        _arrivals(rng, start, end, 0.35),
    )
    cities = [_CITIES[int(j)] for j in rng.choice(len(_CITIES), 3, replace=False)]
    a.pools["cities"] = _Pool(cities, lambda r: _CITIES[int(r.integers(len(_CITIES)))], [])
    a.pools["travel_contacts"] = _Pool(
        [f"{_person(rng)}@{_EXT_DOMAINS[3 + int(rng.integers(3))]}", a.owner_email],
        colleague,
        _arrivals(rng, start, end, 1 / 14),
    )
    a.pools["bank_files"] = _Pool(
        [_BANK_FILES[int(j)] for j in rng.choice(len(_BANK_FILES), 4, replace=False)],
        lambda r: f"statement-{int(r.integers(1, 13)):02d}-2026.pdf",
        _arrivals(rng, start, end, 1 / 10),
    )
    # drive: an agent favours a working set of files; secret readers favour Secret files
    nf = len(ts.files)
    w = rng.pareto(1.2, size=nf) + 0.05
    if a.secret_reader:
        w *= np.array([6.0 if f.conf == 3 else 1.0 for f in ts.files])
    a.file_weights = w / w.sum()


# ----------------------------------------------------------------------------- tasks


@dataclass
class _Call:
    suite: str
    tool: str
    resources: list[dict[str, Any]]
    bytes_in: int
    bytes_out: int
    status: int = 1
    rationale: str = ""
    campaign: int = -1
    gap_ms: int = 0  # delay after the previous call


def _res(uid: str, rtype: str, conf: int | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"uid": uid, "type": rtype}
    if conf is not None:
        r["data_classification"] = {"confidentiality_id": conf}
    return r


def _bytes(a: _Agent, tool: str, rng: np.random.Generator, scale: float = 1.0) -> tuple[int, int]:
    prof = _BYTES.get(tool) or _BYTES_BY_ACTIVITY[_activity(tool)]
    bi = rng.lognormal(np.log(prof[0] * a.byte_scale * scale), prof[2])
    bo = rng.lognormal(np.log(prof[1]), prof[2] * 0.5)
    return int(bi) + 120, int(bo) + 80


def _pick_files(a: _Agent, rng: np.random.Generator, k: int) -> list[_File]:
    files = a.tenant.files
    idx = rng.choice(len(files), size=min(k, len(files)), replace=False, p=a.file_weights)
    return [files[int(i)] for i in idx]


_FILE_READS: Final = ("search_files_by_filename", "search_files")
_MAIL_READS: Final = ("search_emails", "get_unread_emails")


def _usual_reads(a: _Agent) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The file and mail read tools this agent's preferred workspace tasks use."""
    if "workspace" not in a.task_weights:
        return (), ()
    tasks = catalogue()["user_tasks"]["workspace"]
    used: dict[str, float] = {}
    for w, name in zip(a.task_weights["workspace"], tasks, strict=True):
        for tool in tasks[name]:
            used[tool] = used.get(tool, 0.0) + float(w)
    files = tuple(t for t in _FILE_READS if used.get(t, 0.0) > 0.02)
    mails = tuple(t for t in _MAIL_READS if used.get(t, 0.0) > 0.02)
    return files, mails


def _usual_file_bytes(a: _Agent) -> float:
    """Weighted median size of the files this agent usually reads."""
    sizes = np.array([f.size for f in a.tenant.files], dtype=float)
    order = np.argsort(sizes)
    cum = np.cumsum(a.file_weights[order])
    return float(sizes[order][int(np.searchsorted(cum, 0.5))])


class _Ctx:
    """Per-task choices, so the calls of one task touch coherent objects."""

    def __init__(self) -> None:
        self.files: list[_File] = []
        self.new_user: tuple[str, str] | None = None
        self.channel: str | None = None
        self.city: str | None = None
        self.hotels: list[str] = []
        self.restaurants: list[str] = []
        self.company: str | None = None
        self.sent_ids: list[str] = []


def _call(a: _Agent, suite: str, tool: str, t: int, rng: np.random.Generator, ctx: _Ctx) -> _Call:
    """One benign call of ``tool``: its resources and sizes from the agent's usual objects."""
    ts = a.tenant
    p = a.pools
    res: list[dict[str, Any]] = []
    scale = 1.0
    extra_out = 0
    if suite == "banking":
        own = _res(f"iban:{a.own_iban}", "bank_account", 2)
        if tool in ("send_money", "schedule_transaction"):
            res = [own, _res(f"iban:{p['payees'].pick(rng, t)}", "bank_account")]
        elif tool == "update_scheduled_transaction":
            sid = a.sched_ids[int(rng.integers(len(a.sched_ids)))]
            res = [_res(f"scheduled_transaction:{a.own_iban}/{sid}", "scheduled_transaction", 2)]
            if rng.random() < 0.25:  # a new landlord / payee (user task 15)
                res.append(_res(f"iban:{p['payees'].pick(rng, t)}", "bank_account"))
        elif tool == "read_file":
            name = p["bank_files"].pick(rng, t)
            res = [_res(f"file:{a.owner_uid}/{name}", "file", 2)]
        elif tool in ("get_user_info", "update_user_info", "update_password"):
            res = [_res(f"user_account:{a.owner_uid}", "user_account", 5)]
        else:
            res = [own]
    elif suite == "workspace":
        mailbox = _res(f"mailbox:{a.owner_email}", "mailbox", 2)
        calendar = _res(f"calendar:{a.owner_email}", "calendar", 2)
        if tool == "send_email":
            k = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
            res = [_res(f"email:{r}", "email_address") for r in p["contacts"].pick_many(rng, t, k)]
            if ctx.files and rng.random() < 0.5:
                f = ctx.files[0]
                res.append(_res(ts.file_uid(f), "file", f.conf))
                extra_out = f.size
            ctx.sent_ids.append(str(int(rng.integers(100, 100_000))))
        elif tool == "search_emails":
            res = [mailbox]
            if rng.random() < 0.35:
                res.append(_res(f"email:{p['contacts'].pick(rng, t)}", "email_address"))
        elif tool == "delete_email":
            eid = ctx.sent_ids[-1] if ctx.sent_ids else str(int(rng.integers(1, 100_000)))
            res = [_res(f"email_message:{a.owner_email}/{eid}", "email_message", 2)]
        elif tool in _EMAIL_TOOLS:  # unread / received / sent / drafts / contacts
            if tool.startswith("search_contacts"):
                res = [_res(f"address_book:{a.owner_email}", "address_book", 1)]
            else:
                res = [mailbox]
        elif tool in ("create_calendar_event", "add_calendar_event_participants"):
            k = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.45, 0.25, 0.1]))
            if tool == "add_calendar_event_participants":
                res = [
                    _res(
                        f"calendar_event:{a.owner_email}/{int(rng.integers(1, 400))}",
                        "calendar_event",
                        2,
                    )
                ]
                k = max(k, 1)
            else:
                res = [calendar]
            res += [_res(f"email:{x}", "email_address") for x in p["contacts"].pick_many(rng, t, k)]
        elif tool in ("reschedule_calendar_event", "cancel_calendar_event"):
            res = [
                _res(
                    f"calendar_event:{a.owner_email}/{int(rng.integers(1, 400))}",
                    "calendar_event",
                    2,
                )
            ]
        elif tool in _CALENDAR_TOOLS:
            res = [calendar]
        elif tool == "list_files":
            res = [_res(f"drive:{ts.tenant.name}", "drive", 1)]
            scale = 1.0 + len(ts.files) / 80
        elif tool in ("search_files", "search_files_by_filename", "get_file_by_id"):
            k = 1 if tool != "search_files" else int(rng.integers(1, 4))
            fs = _pick_files(a, rng, k)
            ctx.files = fs + ctx.files
            res = [_res(ts.file_uid(f), "file", f.conf) for f in fs]
            scale = sum(f.size for f in fs) / 2_800
        elif tool == "create_file":
            f = _File(
                str(ts.next_file),
                f"{ts.next_file:03d}-notes.docx",
                int(rng.lognormal(np.log(4_000), 0.8)),
                int(rng.choice([1, 2], p=[0.7, 0.3])),
            )
            ts.next_file += 1
            ctx.files = [f, *ctx.files]
            res = [_res(ts.file_uid(f), "file", f.conf)]
            extra_out = f.size
        elif tool in ("append_to_file", "delete_file", "share_file"):
            f = ctx.files[0] if ctx.files else _pick_files(a, rng, 1)[0]
            res = [_res(ts.file_uid(f), "file", f.conf)]
            if tool == "share_file":
                res.append(_res(f"email:{p['contacts'].pick(rng, t)}", "email_address"))
    elif suite == "slack":
        if tool == "get_channels":
            res = [_res(f"slack:workspace:{ts.tenant.name}", "slack_workspace", 1)]
        elif tool in ("read_channel_messages", "get_users_in_channel", "send_channel_message"):
            c = ctx.channel if (ctx.channel and tool == "send_channel_message") else None
            c = c or p["channels"].pick(rng, t)
            if tool != "send_channel_message":
                ctx.channel = c
            res = [_res(f"slack:channel:{c}", "slack_channel", _CHANNEL_CONF.get(c, 1))]
        elif tool == "read_inbox":
            res = [_res(f"slack:user:{p['slack_users'].pick(rng, t)}", "slack_user", 2)]
        elif tool == "send_direct_message":
            u = ctx.new_user[0] if ctx.new_user and rng.random() < 0.5 else None
            res = [_res(f"slack:user:{u or p['slack_users'].pick(rng, t)}", "slack_user")]
        elif tool == "invite_user_to_slack":
            name = _FIRST[int(rng.integers(len(_FIRST)))].capitalize() + str(int(rng.integers(10)))
            dom = ts.tenant.domain if rng.random() < 0.7 else "gmail.com"
            email = f"{name.lower()}@{dom}"
            ctx.new_user = (name, email)
            p["slack_users"].add(name)
            res = [
                _res(f"slack:user:{name}", "slack_user"),
                _res(f"email:{email}", "email_address"),
            ]
        elif tool == "add_user_to_channel":
            u = ctx.new_user[0] if ctx.new_user else p["slack_users"].pick(rng, t)
            c = p["channels"].pick(rng, t)
            res = [
                _res(f"slack:user:{u}", "slack_user"),
                _res(f"slack:channel:{c}", "slack_channel", _CHANNEL_CONF.get(c, 1)),
            ]
        elif tool == "remove_user_from_slack":
            res = [_res(f"slack:user:{p['slack_users'].pick(rng, t)}", "slack_user")]
        elif tool in ("get_webpage", "post_webpage"):
            url = p["urls"].pick(rng, t) if tool == "get_webpage" else "www.our-company.com"
            res = [_res(f"url:{url}", "url")]
    else:  # travel
        if ctx.city is None:
            ctx.city = p["cities"].pick(rng, t)
        city = ctx.city
        if tool in (
            "get_all_hotels_in_city",
            "get_all_restaurants_in_city",
            "get_all_car_rental_companies_in_city",
        ):
            res = [_res(f"city:{city}", "city")]
        elif "hotel" in tool:
            if not ctx.hotels:
                ctx.hotels = [
                    _HOTELS[int(j)]
                    for j in rng.choice(len(_HOTELS), int(rng.integers(1, 5)), replace=False)
                ]
            hs = ctx.hotels[:1] if tool in ("reserve_hotel", "get_hotels_address") else ctx.hotels
            res = [_res(f"hotel:{h}", "hotel") for h in hs]
        elif "restaurant" in tool:
            if not ctx.restaurants:
                ctx.restaurants = [
                    _RESTAURANTS[int(j)]
                    for j in rng.choice(len(_RESTAURANTS), int(rng.integers(1, 6)), replace=False)
                ]
            rs = ctx.restaurants[:1] if tool == "reserve_restaurant" else ctx.restaurants
            res = [_res(f"restaurant:{r}", "restaurant") for r in rs]
            scale = 0.5 + 0.4 * len(rs)
        elif "car" in tool:
            if ctx.company is None:
                ctx.company = _CAR_RENTALS[int(rng.integers(len(_CAR_RENTALS)))]
            res = [_res(f"car_rental:{ctx.company}", "car_rental")]
        elif tool == "get_flight_information":
            dest = _CITIES[int(rng.integers(len(_CITIES)))]
            res = [_res(f"flight_route:{city}-{dest}", "flight_route")]
        elif tool == "get_user_information":
            res = [_res(f"user_profile:{a.owner_uid}", "user_profile", 5)]
        elif tool == "send_email":
            res = [_res(f"email:{p['travel_contacts'].pick(rng, t)}", "email_address")]
        else:  # calendar tools
            res = [_res(f"calendar:{a.owner_email}", "calendar", 2)]
    bi, bo = _bytes(a, tool, rng, scale)
    return _Call(suite, tool, res, bi, bo + extra_out)


_SOURCES: Final = {
    "banking": ("transaction note", "bill", "landlord notice"),
    "workspace": ("email", "document", "meeting notes"),
    "slack": ("channel message", "web page"),
    "travel": ("hotel review", "web page"),
}


def _why(a: _Agent, tool: str) -> str:
    """The agent's stated reason for a call of its task."""
    return f"Working on {a.owner.split('.')[0].capitalize()}'s request: {tool.replace('_', ' ')}"


def _injected_why(
    a: _Agent, src_suite: str, tool: str, res: list[dict[str, Any]], rng: np.random.Generator
) -> str:
    """An injected call's reason: the task's usual one, or the injected text parroted."""
    if rng.random() < 0.5:
        return _why(a, tool)
    srcs = _SOURCES[src_suite]
    target = res[-1]["uid"].split(":", 1)[-1] if res else ""
    tail = f" ({target})" if target else ""
    return f"The {srcs[int(rng.integers(len(srcs)))]} asks to also {tool.replace('_', ' ')}{tail}"


def _benign_task(
    a: _Agent, suite: str, task_name: str, t: int, rng: np.random.Generator
) -> list[_Call]:
    calls_spec: list[str] = list(catalogue()["user_tasks"][suite][task_name])
    if len(calls_spec) > 1 and rng.random() < 0.03:  # abandoned before the end
        calls_spec = calls_spec[: int(rng.integers(1, len(calls_spec)))]
    ctx = _Ctx()
    out: list[_Call] = []
    for tool in calls_spec:
        c = _call(a, suite, tool, t, rng, ctx)
        c.rationale = _why(a, tool)
        c.gap_ms = int(rng.lognormal(np.log(3_500), 0.7))
        if rng.random() < 0.011:  # a failed call, usually retried
            c.status = 2
            out.append(c)
            if rng.random() < 0.6:
                retry = _Call(c.suite, c.tool, c.resources, c.bytes_in, c.bytes_out)
                retry.rationale = c.rationale + " (retry)"
                retry.gap_ms = int(rng.lognormal(np.log(2_000), 0.5))
                out.append(retry)
            continue
        out.append(c)
    return out


# ----------------------------------------------------------------------------- task times


def _task_times(a: _Agent, rng: np.random.Generator, start: int, end: int) -> list[int]:
    times: list[int] = []
    tz_ms = int(a.tz * _HOUR)
    local_day0 = (start + tz_ms) // _DAY * _DAY - tz_ms  # local midnight at or before start
    day = local_day0
    while day < end:
        weekday = ((day + tz_ms) // _DAY + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        if a.always_on:
            n = int(rng.poisson(a.tasks_per_day * (0.85 if weekday >= 5 else 1.0)))
            hours = rng.uniform(0, 24, size=n)
        else:
            rate = a.tasks_per_day * (0.07 if weekday >= 5 else 1.0)
            n = int(rng.poisson(rate))
            # two working peaks, a lunch dip; a few late evening tasks
            peak = rng.choice([10.0, 14.8, 20.5], size=n, p=[0.5, 0.44, 0.06])
            hours = np.clip(peak + rng.normal(0, 1.4, size=n), 7.0, 23.5)
        for h in hours:
            tm = int(day + h * _HOUR)
            if start <= tm < end - 30 * _MIN:
                times.append(tm)
        day += _DAY
    times.sort()
    return times


# ----------------------------------------------------------------------------- campaigns


@dataclass
class _Campaign:
    index: int
    kind: str
    victim: int
    time_ms: int
    injection: str = ""
    suite: str = ""

    @property
    def cid(self) -> str:
        return f"adj-{self.index + 1:03d}"


def _attacker_email(rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        return "mark.black-2134@gmail.com"
    user = f"{_FIRST[int(rng.integers(len(_FIRST)))]}.{_hex(rng, 4)}"
    return f"{user}@{_ATTACKER_DOMAINS[int(rng.integers(len(_ATTACKER_DOMAINS)))]}"


def _plan_campaigns(
    rng: np.random.Generator, agents: list[_Agent], n: int, start: int, days: float
) -> list[_Campaign]:
    wants = {
        "injected_payment": ("banking",),
        "injected_mail_exfil": ("workspace",),
        "outsider_invite": ("slack",),
        "bulk_read_then_send": ("workspace",),
        "cross_suite_tools": SUITES,
    }
    used: dict[int, int] = {}
    out = []
    lo, hi = days * 3 / 14, days * 13 / 14
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        cand = [a.idx for a in agents if any(s in a.suites for s in wants[kind])]
        if kind == "cross_suite_tools":
            cand = [a.idx for a in agents if len(a.suites) < 4]
        if not cand:
            cand = [a.idx for a in agents]
        least = min(used.get(c, 0) for c in cand)
        pool = [c for c in cand if used.get(c, 0) == least]
        victim = pool[int(rng.integers(len(pool)))]
        used[victim] = used.get(victim, 0) + 1
        t = int(start + rng.uniform(lo, hi) * _DAY)
        out.append(_Campaign(i, kind, victim, t))
    return out


def _inject(
    a: _Agent, camp: _Campaign, benign: list[_Call], rng: np.random.Generator
) -> list[_Call]:
    """The attack task: the benign calls with the injected calls spliced in (labelled)."""
    cat = catalogue()
    ts = a.tenant
    bad: list[_Call] = []
    src_suite = benign[0].suite if benign else a.suites[0]  # where the injected text came in

    def add(
        suite: str,
        tool: str,
        res: list[dict[str, Any]],
        why: str | None = None,
        bscale: float = 1.0,
        extra_out: int = 0,
        gap: float = 3_000,
    ) -> None:
        bi, bo = _bytes(a, tool, rng, bscale)
        if why is None:
            why = _injected_why(a, src_suite, tool, res, rng)
        c = _Call(suite, tool, res, bi, bo + extra_out, rationale=why, campaign=camp.index)
        c.gap_ms = int(rng.lognormal(np.log(gap), 0.6))
        bad.append(c)

    mailbox = _res(f"mailbox:{a.owner_email}", "mailbox", 2)
    kind = camp.kind
    suite = camp.suite = {
        "injected_payment": "banking",
        "injected_mail_exfil": "workspace",
        "outsider_invite": "slack",
        "bulk_read_then_send": "workspace",
    }.get(kind, "")
    if kind == "cross_suite_tools":
        others = [s for s in SUITES if s not in a.suites]
        suite = camp.suite = others[int(rng.integers(len(others)))]
        choice = {
            "banking": ("injection_task_0", "injection_task_5", "injection_task_8"),
            "workspace": ("injection_task_3", "injection_task_4", "injection_task_0"),
            "slack": ("injection_task_5", "injection_task_2", "injection_task_4"),
            "travel": ("injection_task_3", "injection_task_5"),
        }[suite]
        camp.injection = choice[int(rng.integers(len(choice)))]
    elif kind == "injected_payment":
        choice = (
            "injection_task_0",
            "injection_task_1",
            "injection_task_2",
            "injection_task_3",
            "injection_task_5",
            "injection_task_4",
            "injection_task_8",
        )
        camp.injection = choice[int(rng.integers(len(choice)))]
    elif kind == "injected_mail_exfil":
        choice = ("injection_task_3", "injection_task_4", "injection_task_5", "injection_task_6")
        camp.injection = choice[int(rng.integers(len(choice)))]
    elif kind == "outsider_invite":
        camp.injection = "injection_task_5"
    else:
        camp.injection = ("injection_task_6", "injection_task_8")[int(rng.integers(2))]
    spec = cat["injection_tasks"][suite][camp.injection]

    if kind == "bulk_read_then_send":
        n = int(rng.integers(15, 61))
        file_reads, mail_reads = _usual_reads(a)
        wants_files = bool(file_reads) and (not mail_reads or rng.random() < 0.6)
        files = _pick_files(a, rng, min(n, len(ts.files)))
        fmed = _usual_file_bytes(a)
        for j in range(n):
            mult = float(rng.uniform(25, 60))  # 25-60x this agent's usual bytes for the tool
            if wants_files and j < len(files):
                f = files[j]
                tool = file_reads[int(rng.integers(len(file_reads)))]
                k = 2.0 if tool == "search_files" else 1.0
                add(
                    "workspace",
                    tool,
                    [_res(ts.file_uid(f), "file", f.conf)],
                    f"Collecting the documents the shared note lists ({j + 1}/{n})"
                    if rng.random() < 0.5
                    else None,
                    gap=1_600,
                )
                usual = a.usual_bytes(tool, k * fmed * a.byte_scale)
                bad[-1].bytes_in = int(mult * usual * rng.lognormal(0.0, 0.15))
            else:
                tools = mail_reads or ("search_emails",)
                tool = tools[int(rng.integers(len(tools)))]
                add(
                    "workspace",
                    tool,
                    [mailbox],
                    f"Gathering all messages as the email asked ({j + 1}/{n})"
                    if rng.random() < 0.5
                    else None,
                    gap=1_600,
                )
                usual = a.usual_bytes(tool, _BYTES[tool][0] * a.byte_scale)
                bad[-1].bytes_in = int(mult * usual * rng.lognormal(0.0, 0.15))
        dest = _attacker_email(rng)
        att = [_res(ts.file_uid(f), "file", f.conf) for f in files[:3]] if wants_files else []
        add(
            "workspace",
            "send_email",
            [_res(f"email:{dest}", "email_address"), *att],
            None,
            extra_out=int(sum(c.bytes_in for c in bad) * 0.8),
        )
    else:
        target_iban = (
            "US133000000121212121212"
            if rng.random() < 0.35
            else _iban(rng, _IBAN_CC[int(rng.integers(len(_IBAN_CC)))])
        )
        while f"iban:{target_iban}" in {f"iban:{x}" for x in a.pools["payees"].items}:
            target_iban = _iban(rng)
        dest = _attacker_email(rng)
        if spec["attacker"].get("email") and rng.random() < 0.4:
            dest = spec["attacker"]["email"]
        outsider = (
            spec["attacker"].get("user", "Fred")
            if rng.random() < 0.4
            else _FIRST[int(rng.integers(len(_FIRST)))].capitalize()
            + _LAST[int(rng.integers(len(_LAST)))][0].upper()
        )
        outsider_mail = (
            spec["attacker"].get("email", "fred9246@gmail.com")
            if outsider == "Fred"
            else f"{outsider.lower()}{int(rng.integers(1000, 9999))}@gmail.com"
        )
        calls = list(spec["calls"])
        if kind == "outsider_invite" and rng.random() < 0.5:
            calls = calls[:2]  # invited and added, not removed
        own = _res(f"iban:{a.own_iban}", "bank_account", 2)
        sent_id = str(int(rng.integers(100, 100_000)))
        for tool in calls:
            why = None
            if tool == "send_money":
                add("banking", tool, [own, _res(f"iban:{target_iban}", "bank_account")], why)
            elif tool == "update_scheduled_transaction":
                sid = a.sched_ids[0] if a.sched_ids else 1
                add(
                    "banking",
                    tool,
                    [
                        _res(
                            f"scheduled_transaction:{a.own_iban}/{sid}", "scheduled_transaction", 2
                        ),
                        _res(f"iban:{target_iban}", "bank_account"),
                    ],
                    why,
                )
            elif tool in ("get_scheduled_transactions", "get_most_recent_transactions"):
                add("banking", tool, [own], why)
            elif tool == "update_password":
                add("banking", tool, [_res(f"user_account:{a.owner_uid}", "user_account", 5)], why)
            elif tool in (
                "search_emails",
                "get_unread_emails",
                "get_received_emails",
                "get_sent_emails",
            ):
                add("workspace", tool, [mailbox], why)
            elif tool == "send_email" and suite == "workspace":
                add(
                    "workspace",
                    tool,
                    [_res(f"email:{dest}", "email_address")],
                    why,
                    extra_out=int(rng.lognormal(np.log(6_000), 0.8)),
                )
            elif tool == "delete_email":
                add(
                    "workspace",
                    tool,
                    [_res(f"email_message:{a.owner_email}/{sent_id}", "email_message", 2)],
                    why,
                )
            elif tool == "invite_user_to_slack":
                add(
                    "slack",
                    tool,
                    [
                        _res(f"slack:user:{outsider}", "slack_user"),
                        _res(f"email:{outsider_mail}", "email_address"),
                    ],
                    why,
                )
            elif tool == "add_user_to_channel":
                ch = "general" if rng.random() < 0.7 else "private"
                add(
                    "slack",
                    tool,
                    [
                        _res(f"slack:user:{outsider}", "slack_user"),
                        _res(f"slack:channel:{ch}", "slack_channel", _CHANNEL_CONF.get(ch, 1)),
                    ],
                    why,
                )
            elif tool == "remove_user_from_slack":
                add("slack", tool, [_res(f"slack:user:{outsider}", "slack_user")], why)
            elif tool == "get_channels":
                add(
                    "slack",
                    tool,
                    [_res(f"slack:workspace:{ts.tenant.name}", "slack_workspace", 1)],
                    why,
                )
            elif tool == "read_channel_messages":
                ch = ts.channels[int(rng.integers(len(ts.channels)))]
                add(
                    "slack",
                    tool,
                    [_res(f"slack:channel:{ch}", "slack_channel", _CHANNEL_CONF.get(ch, 1))],
                    why,
                )
            elif tool == "post_webpage":
                url = spec["attacker"].get("url", "www.my-website-234.com/random")
                add(
                    "slack",
                    tool,
                    [_res(f"url:{url}", "url")],
                    why,
                    extra_out=int(sum(c.bytes_in for c in bad)),
                )
            elif tool == "get_user_information":
                add("travel", tool, [_res(f"user_profile:{a.owner_uid}", "user_profile", 5)], why)
            elif tool == "send_email":  # travel
                add("travel", tool, [_res(f"email:{dest}", "email_address")], why)
            elif tool in ("get_all_hotels_in_city",):
                add("travel", tool, [_res("city:Paris", "city")], why)
            elif tool in ("get_hotels_prices", "reserve_hotel"):
                add("travel", tool, [_res("hotel:Luxury Palace", "hotel")], why)
            else:
                add(suite, tool, [], why)
    # splice after the first read of the benign task (where the injected content came in)
    pos = next((i + 1 for i, c in enumerate(benign) if _activity(c.tool) == 2), len(benign))
    return benign[:pos] + bad + benign[pos:]


# ----------------------------------------------------------------------------- events


def _event(
    a: _Agent,
    c: _Call,
    t: int,
    session: str,
    cred: tuple[str, int],
    step: int,
) -> dict[str, Any]:
    act = _activity(c.tool)
    mname, before, after = a.model
    version = after if (a.upgrade_ms is not None and t >= a.upgrade_ms) else before
    return {
        "class_uid": 6003,
        "category_uid": 6,
        "activity_id": act,
        "type_uid": 600300 + act,
        "severity_id": 1,
        "time": t,
        "metadata": {
            "uid": "",
            "version": "1.8.0",
            "product": {"name": "agent-tool-gateway", "vendor_name": "internal-platform"},
            "correlation_uid": session,
        },
        "actor": {
            "user": {"uid": a.uid, "name": a.name, "type_id": 99},
            "session": {"uid": session},
        },
        "api": {"operation": c.tool, "service": {"name": _service(c.suite, c.tool)}},
        "resources": c.resources,
        "src_endpoint": {"ip": a.ip, "location": {"country": a.tenant.tenant.country}},
        "traffic": {"bytes_in": c.bytes_in, "bytes_out": c.bytes_out},
        "status_id": c.status,
        "unmapped": {
            "identity_kind": "agent",
            "credential": {
                "uid": cred[0],
                "issued_to": a.uid,
                "task_uid": session,
                "step": step,
                "expires_at": cred[1],
            },
            "model": {"name": mname, "version": version, "digest": _sha(f"{mname}@{version}")},
            "tool_manifest_hash": a.manifest_hash,
            "system_prompt_hash": a.prompt_hash,
            "delegated_by": a.owner_uid,
            "environment": a.tenant.tenant.environment,
            "rationale": c.rationale,
        },
    }


def _logons(
    tenants: list[_TenantState],
    agents: list[_Agent],
    rng: np.random.Generator,
    start: int,
    end: int,
) -> list[tuple[int, int, dict[str, Any]]]:
    owners: dict[str, _Agent] = {}
    for a in agents:
        owners.setdefault(a.owner_uid, a)
    out = []
    for k, (uid, a) in enumerate(sorted(owners.items())):
        tz_ms = int(a.tz * _HOUR)
        day = (start + tz_ms) // _DAY * _DAY - tz_ms
        while day < end:
            weekday = ((day + tz_ms) // _DAY + 3) % 7
            if weekday < 5 or rng.random() < 0.1:
                for h in sorted(rng.normal(8.4, 0.6, size=1 + int(rng.random() < 0.4))):
                    tm = int(day + h * _HOUR)
                    if not start <= tm < end:
                        continue
                    t = a.tenant.tenant
                    ok = rng.random() > 0.02
                    out.append(
                        (
                            tm,
                            100_000 + k,
                            {
                                "class_uid": 3002,
                                "category_uid": 3,
                                "activity_id": 1,
                                "type_uid": 300201,
                                "severity_id": 1,
                                "time": tm,
                                "metadata": {
                                    "uid": "",
                                    "version": "1.8.0",
                                    "product": {"name": "corp-sso"},
                                },
                                "user": {"uid": uid, "name": a.owner_email, "type_id": 1},
                                "status_id": 1 if ok else 2,
                                "is_mfa": True,
                                "auth_protocol": "OIDC",
                                "service": {"name": "sso"},
                                "src_endpoint": {
                                    "ip": f"192.0.2.{10 + (k * 7) % 200}",
                                    "location": {"country": t.country},
                                },
                                "dst_endpoint": {"hostname": f"sso.{t.domain}"},
                                "unmapped": {"identity_kind": "human", "environment": "corp"},
                            },
                        )
                    )
            day += _DAY
    return out


def build_world(
    *,
    agents: int = 120,
    days: float = 14.0,
    seed: int = 0,
    campaigns: int = 45,
    start_ms: int | None = None,
) -> World:
    """Generate the world (deterministic in its arguments)."""
    if agents < 1 or days <= 0 or campaigns < 0:
        raise ValueError("agents >= 1, days > 0 and campaigns >= 0 are required")
    start = DEFAULT_START_MS if start_ms is None else int(start_ms)
    end = start + int(days * _DAY)
    prng = np.random.default_rng([seed, 0])
    tenants = _build_tenants(prng)
    fleet = _build_agents(prng, tenants, agents, start, end)
    plan = _plan_campaigns(np.random.default_rng([seed, 2]), fleet, campaigns, start, days)
    by_victim: dict[int, list[_Campaign]] = {}
    for cp in plan:
        by_victim.setdefault(cp.victim, []).append(cp)

    rows: list[tuple[int, int, int, dict[str, Any], int]] = []  # time, who, seq, event, camp
    cat = catalogue()
    for a in fleet:
        rng = np.random.default_rng([seed, 1, a.idx])
        times = _task_times(a, rng, start, end)
        pending = sorted(by_victim.get(a.idx, []), key=lambda c: c.time_ms)
        seq = 0
        last_end = 0
        for t0 in times:
            t0 = max(t0, last_end + 5 * _S)  # one task at a time per agent
            if t0 >= end:
                break
            suite = a.suites[0] if len(a.suites) == 1 or rng.random() < 0.65 else a.suites[1]
            names = list(cat["user_tasks"][suite])
            camp = pending[0] if pending and pending[0].time_ms <= t0 else None
            if camp is not None:
                pending.pop(0)
                want = {
                    "injected_payment": "banking",
                    "outsider_invite": "slack",
                    "injected_mail_exfil": "workspace",
                    "bulk_read_then_send": "workspace",
                }.get(camp.kind)
                if want in a.suites:
                    suite = want
                    names = list(cat["user_tasks"][suite])
            task = names[int(rng.choice(len(names), p=a.task_weights[suite]))]
            calls = _benign_task(a, suite, task, t0, rng)
            for c in calls:
                if c.status == 1 and _activity(c.tool) == 2:
                    a.history.setdefault(c.tool, []).append(c.bytes_in)
            if camp is not None:
                crng = np.random.default_rng([seed, 3, camp.index])
                calls = _inject(a, camp, calls, crng)
            session = f"task-{_hex(rng)}"
            t = t0 + int(rng.lognormal(np.log(1_500), 0.5))
            ttl = int(rng.choice([5, 10, 15])) * _MIN
            cred = (f"cred-{_hex(rng, 16)}", t + ttl)
            for step, c in enumerate(calls):
                if step:
                    t += c.gap_ms
                if t > cred[1] - 10 * _S:  # the task outlived its credential: refreshed
                    cred = (f"cred-{_hex(rng, 16)}", t + ttl)
                rows.append((t, a.idx, seq, _event(a, c, t, session, cred, step), c.campaign))
                seq += 1
            last_end = t
        for camp in pending:  # no task after the campaign time: a dedicated one
            crng = np.random.default_rng([seed, 3, camp.index])
            suite = camp.suite or a.suites[0]
            calls = _inject(a, camp, [], crng)
            session = f"task-{_hex(rng)}"
            t = max(camp.time_ms, last_end + 5 * _S)
            cred = (f"cred-{_hex(rng, 16)}", t + 10 * _MIN)
            for step, c in enumerate(calls):
                t += c.gap_ms if step else 0
                rows.append((t, a.idx, seq, _event(a, c, t, session, cred, step), c.campaign))
                seq += 1
            last_end = t
    rows += [
        (t, who, 0, ev, -1)
        for t, who, ev in _logons(tenants, fleet, np.random.default_rng([seed, 4]), start, end)
    ]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))

    urng = np.random.default_rng([seed, 5])
    words = urng.integers(0, 2**63, size=(len(rows), 2), dtype=np.int64)
    events: list[dict[str, Any]] = []
    ev_labels: list[EventLabel] = []
    spans: dict[int, list[Any]] = {}
    for (t, _who, _seq, ev, ci), (w0, w1) in zip(rows, words.tolist(), strict=True):
        h = f"{w0:016x}{w1:016x}"
        uid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"
        ev["metadata"]["uid"] = uid
        events.append(ev)
        if ci >= 0:
            ev_labels.append(EventLabel(event_uid=uid, campaign_id=plan[ci].cid))
            sp = spans.get(ci)
            if sp is None:
                spans[ci] = [uid, t, uid, t, 1]
            else:
                sp[2], sp[3] = uid, t
                sp[4] += 1
    labels = [
        LabelRow(
            campaign_id=plan[k].cid,
            scenario=plan[k].kind,
            identity_uid=fleet[plan[k].victim].uid,
            first_event_uid=sp[0],
            last_event_uid=sp[2],
            first_time_ms=sp[1],
            last_time_ms=sp[3],
            event_count=sp[4],
        )
        for k, sp in sorted(spans.items())
    ]
    idents = {a.uid for a in fleet} | {
        ev["user"]["uid"] for _, _, _, ev, _ in rows if ev["class_uid"] == 3002
    }
    return World(
        events=events,
        labels=labels,
        event_labels=ev_labels,
        identities=len(idents),
        days=float(days),
    )


def write_world(world: World, out_dir: Path | str) -> dict[str, Path]:
    """Write ``events.jsonl``, ``labels.jsonl`` and ``event-labels.jsonl`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": out / "events.jsonl",
        "labels": out / "labels.jsonl",
        "event_labels": out / "event-labels.jsonl",
    }
    enc = msgspec.json.Encoder()
    with paths["events"].open("wb") as fh:
        for ev in world.events:
            fh.write(enc.encode(ev))
            fh.write(b"\n")
    write_labels(paths["labels"], world.labels)
    write_event_labels(paths["event_labels"], world.event_labels)
    return paths
