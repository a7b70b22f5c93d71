"""The two ways a list of docs drops its repeats: by id (the baselines' contexts) and by id or content
(s3's context)."""

from s3ray.types import Doc, dedup_by_id, dedup_by_id_or_content


def test_dedup_by_id_keeps_first_occurrence_in_order():
    docs = [Doc("a", "", ""), Doc("b", "", ""), Doc("a", "", "other"), Doc("c", "", "")]
    assert [d.id for d in dedup_by_id(docs)] == ["a", "b", "c"]


def test_dedup_by_id_or_content():
    a = Doc("1", "T", "x")
    assert dedup_by_id_or_content([a, Doc("1", "T2", "y"), Doc("2", "T", " x "), Doc("3", "T", "z")]) \
        == [a, Doc("3", "T", "z")]


def test_the_same_passage_under_two_ids_is_one_doc_only_by_content():
    twice = [Doc("1", "T", "x"), Doc("2", "T", "x")]
    assert dedup_by_id(twice) == twice
    assert dedup_by_id_or_content(twice) == twice[:1]
