"""Steps (previous call of a task -> this call) and the parties of a write."""

from __future__ import annotations

import random

from pipeline.baselines.baselines import BaselineModel
from pipeline.baselines.features import extract, is_party
from pipeline.baselines.layout import DEVIATION_INDEX
from pipeline.events.schemas import Event, Resource
from tests.unit.baselines.test_baselines import MONDAY

STEP = DEVIATION_INDEX["step"]
CP = DEVIATION_INDEX["counterparty"]


def call(k: int, op: str, task: str, **kw: object) -> Event:
    return Event(uid=f"e{k}", class_uid=6003, activity_id=kw.pop("activity_id", 2),  # type: ignore[arg-type]
                 time_ms=MONDAY + k * 20_000, identity_uid="agt", identity_kind="agent",
                 service="mail", operation=op, session_uid=task, bytes_out=500, **kw)  # type: ignore[arg-type]  # fmt: skip


def trained(sequence: tuple[str, ...], tasks: int = 150) -> tuple[BaselineModel, object, int]:
    m, s = BaselineModel(), BaselineModel().new_state()
    k = 0
    for t in range(tasks):
        for op in sequence:
            f = extract(call(k, op, f"task-{t}"))
            m.observe(s, f)
            m.learn_one(s, f)
            k += 1
    return m, s, k


def score(m: BaselineModel, s: object, e: Event) -> tuple[float, list[str]]:
    f = extract(e)
    m.observe(s, f)  # type: ignore[arg-type]
    dev, why = m.deviations(s, f)  # type: ignore[arg-type]
    return float(dev[STEP]), [c.text for c in why if c.feature == "step"]


def test_familiar_calls_in_an_unfamiliar_order_are_a_new_step() -> None:
    m, s, k = trained(("search_emails", "read_email", "reply"))
    # The usual task: no step is new.
    usual = ("search_emails", "read_email", "reply")
    assert [score(m, s, call(k + i, op, "usual"))[0] for i, op in enumerate(usual)] == [0.0] * 3
    # The same three tools, but a send right after the search (and a delete after it).
    assert score(m, s, call(k + 10, "search_emails", "odd"))[0] == 0.0
    dev, texts = score(m, s, call(k + 11, "reply", "odd"))
    assert dev > 0.8
    assert texts and texts[0].startswith("`reply` right after `search_emails`")
    # A task that starts with what usually comes last.
    assert score(m, s, call(k + 20, "reply", "other"))[0] > 0.8


def test_steps_follow_each_of_two_interleaved_tasks() -> None:
    m, s, k = trained(("a", "b"))
    for i, (op, task) in enumerate((("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"))):
        assert score(m, s, call(k + i, op, task))[0] == 0.0, (op, task)


def test_new_steps_are_discounted_where_they_are_the_norm() -> None:
    m, s = BaselineModel(), BaselineModel().new_state()
    rng = random.Random(1)
    for k in range(600):  # every task takes a path of its own through 40 tools
        f = extract(call(k, f"tool-{rng.randrange(40)}", f"t{k // 3}"))
        m.observe(s, f)
        m.learn_one(s, f)
    assert score(m, s, call(10_000, "tool-new", "t-new"))[0] < 0.2


def test_steps_survive_the_codec() -> None:
    m, s, k = trained(("a", "b", "c"), tasks=20)
    back = m.from_bytes(m.to_bytes(s))  # type: ignore[arg-type]
    assert back.step_bloom == s.step_bloom and back.last_op == s.last_op != 0  # type: ignore[attr-defined]
    assert m.to_bytes(back) == m.to_bytes(s)  # type: ignore[arg-type]
    # The restored state knows where its running task stands: "c" after "b" is usual.
    assert score(m, back, call(k, "a", "task-19"))[0] > 0.0  # "a" after "c": never
    assert score(m, back, call(k + 1, "b", "task-19"))[0] == 0.0


def test_a_payment_names_the_payers_account_and_a_new_payee() -> None:
    """The payer's own account comes first and is always familiar; the payee is new."""
    m, s = BaselineModel(), BaselineModel().new_state()

    def pay(k: int, payee: str) -> Event:
        return call(k, "send_money", f"t{k}", activity_id=1, resources=(
            Resource("iban:OWN", "bank_account", 2), Resource(f"iban:{payee}", "bank_account")))

    for k in range(300):
        f = extract(pay(k, f"REG{k % 5}"))
        m.observe(s, f)
        m.learn_one(s, f)
    f = extract(pay(400, "REG3"))
    m.observe(s, f)
    assert m.deviations(s, f)[0][CP] == 0.0
    f = extract(pay(401, "ATTACKER"))
    assert f.cat_values[DEVIATION_INDEX["counterparty"] - DEVIATION_INDEX["country"]] == "iban:OWN"
    m.observe(s, f)
    dev, why = m.deviations(s, f)
    assert dev[CP] > 0.7
    assert any("first write to counterparty `iban:ATTACKER`" in c.text for c in why)


def test_messages_and_files_are_not_parties() -> None:
    assert not is_party("email_message:a@b/1", "email_message")
    assert not is_party("slack:channel:general", "slack_channel")
    assert not is_party("file:1", "user_file")
    assert is_party("slack:user:Fred", "slack_user")
    assert is_party("x", "BankAccount") and is_party("mailto:a@b", None)
    # A delete of a message names no counterparty at all.
    f = extract(call(1, "delete_email", "t", activity_id=4,
                     resources=(Resource("email_message:a@b/9", "email_message"),)))
    assert f.cat_hashes[DEVIATION_INDEX["counterparty"] - DEVIATION_INDEX["country"]] == 0
