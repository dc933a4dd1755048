"""The process's book of names for hashed values: bounded, and an event whose values are all
known costs one set operation."""

from __future__ import annotations

from pipeline.baselines.features import CATEGORICAL, cat_hash
from pipeline.baselines.names import NameBook

_NAMES = [n for n in CATEGORICAL if n != "combo"]


def _event(**values: str) -> tuple[tuple[int, ...], tuple[str | None, ...]]:
    vals = tuple(values.get(n) for n in CATEGORICAL)
    return tuple(cat_hash(n, v) if v else 0 for n, v in zip(CATEGORICAL, vals, strict=True)), vals


def test_every_named_feature_is_noted_and_combo_is_not() -> None:
    book = NameBook()
    values = {n: f"{n}-value" for n in CATEGORICAL}
    hashes, vals = _event(**values)
    book.note_all(hashes, vals)
    for i, n in enumerate(CATEGORICAL):
        assert book.name(i, hashes[i]) == (None if n == "combo" else f"{n}-value")
    assert len(book) == len(_NAMES)


def test_a_new_value_beside_known_ones_is_noted() -> None:
    book = NameBook()
    book.note_all(*_event(country="DE", service="s3"))
    hashes, vals = _event(country="DE", service="s3", operation="GetObject")
    book.note_all(hashes, vals)
    assert book.name(CATEGORICAL.index("operation"), hashes[CATEGORICAL.index("operation")]) \
        == "GetObject"


def test_an_evicted_value_is_named_again_when_it_comes_back() -> None:
    book = NameBook(per_feature=2)
    c = CATEGORICAL.index("country")
    for cc in ("DE", "FR", "NL"):  # DE is evicted
        book.note_all(*_event(country=cc))
    de = cat_hash("country", "DE")
    assert book.name(c, de) is None
    book.note_all(*_event(country="DE"))  # must not pass as "all known"
    assert book.name(c, de) == "DE"
    assert len(book) == 2


def test_note_many_is_note_all_event_by_event() -> None:
    events = [_event(country=cc, service=s) for cc, s in
              (("DE", "s3"), ("FR", "s3"), ("DE", "ec2"), ("NL", "s3"), ("DE", "iam"))]  # fmt: skip
    one_by_one, at_once = NameBook(per_feature=2), NameBook(per_feature=2)  # evicts
    for hashes, vals in events:
        one_by_one.note_all(hashes, vals)
    at_once.note_many([h for h, _ in events], [v for _, v in events])
    assert at_once._pages == one_by_one._pages and at_once._seen == one_by_one._seen
    assert [list(p.values()) for p in at_once._pages[:4]] == [["NL", "DE"], [], [], ["ec2", "iam"]]
