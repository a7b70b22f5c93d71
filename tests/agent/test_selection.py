import pytest

from s3ray.agent.selection import pair_selections, select_context
from s3ray.config import AgentConfig
from s3ray.types import Doc


def docs(prefix: str, n: int) -> list[Doc]:
    return [Doc(f"{prefix}{i}", f"T{prefix}{i}", f"text {prefix}{i}") for i in range(1, n + 1)]


def ids(context: list[Doc]) -> list[str]:
    return [d.id for d in context]


INITIAL, SEARCH1, SEARCH2 = docs("i", 3), docs("a", 8), docs("b", 8)


def test_selected_docs_come_first_then_unselected_blocks():
    context = select_context([INITIAL, SEARCH1], [(1, [4, 2])], AgentConfig())
    assert ids(context) == ["a4", "a2", "i1", "i2", "i3"]


def test_block_without_selection_contributes_all_its_docs():
    context = select_context([INITIAL, SEARCH1, SEARCH2], [(1, [1])], AgentConfig(select_cap=None))
    assert ids(context) == ["a1", "i1", "i2", "i3"] + [f"b{i}" for i in range(1, 9)]


def test_selection_from_the_initial_block():
    context = select_context([INITIAL], [(0, [2])], AgentConfig())
    assert ids(context) == ["i2"]


def test_second_selection_after_the_same_block_is_ignored():
    context = select_context([INITIAL, SEARCH1], [(1, [1]), (1, [5, 6])], AgentConfig())
    assert ids(context) == ["a1", "i1", "i2", "i3"]


def test_out_of_range_ids_are_ignored_before_the_cap():
    context = select_context([INITIAL, SEARCH1], [(1, [0, 9, -1, 3, 3, 5, 6, 7])], AgentConfig(select_cap=3))
    assert ids(context)[:3] == ["a3", "a5", "a6"]


def test_cap_per_turn_and_no_cap():
    selections = [(1, [1, 2, 3, 4]), (2, [8, 7, 6, 5])]
    capped = select_context([INITIAL, SEARCH1, SEARCH2], selections, AgentConfig(select_cap=2))
    uncapped = select_context([INITIAL, SEARCH1, SEARCH2], selections, AgentConfig(select_cap=None))
    assert ids(capped) == ["a1", "a2", "b8", "b7", "i1", "i2", "i3"]
    assert ids(uncapped) == ["a1", "a2", "a3", "a4", "b8", "b7", "b6", "b5", "i1", "i2", "i3"]


def test_empty_selection_claims_the_block_with_nothing():
    context = select_context([INITIAL, SEARCH1], [(1, [])], AgentConfig())
    assert ids(context) == ["i1", "i2", "i3"]


def test_duplicates_across_blocks_kept_once_at_first_place():
    again = [Doc("x", "other title", "other"), INITIAL[0]]  # i1 retrieved again by a search
    same_text = Doc("copy-of-a2", SEARCH1[1].title, SEARCH1[1].text)  # a different id, the same passage
    context = select_context([INITIAL, again, [SEARCH1[1], same_text]], [(1, [2, 1])], AgentConfig())
    assert ids(context) == ["i1", "x", "i2", "i3", "a2"]


def test_ablation_without_initial_docs():
    cfg = AgentConfig(use_initial_docs=False)
    assert ids(select_context([INITIAL, SEARCH1], [(0, [1]), (1, [2])], cfg)) == ["a2"]
    assert select_context([INITIAL], [], cfg) == []


def test_ablation_without_selection_keeps_every_doc():
    cfg = AgentConfig(use_selection=False)
    context = select_context([INITIAL, SEARCH1], [(1, [2])], cfg)
    assert ids(context) == ids(INITIAL) + ids(SEARCH1)
    both = AgentConfig(use_selection=False, use_initial_docs=False)
    assert ids(select_context([INITIAL, SEARCH1], [(1, [2])], both)) == ids(SEARCH1)


def test_selection_naming_a_missing_block_is_an_error():
    with pytest.raises(ValueError, match="block 2"):
        pair_selections(2, [(2, [1])])


def test_presets_set_the_paper_names():
    cfg = AgentConfig(preset="8-3-3")
    assert (cfg.search_k, cfg.select_cap, cfg.max_turns) == (8, 3, 3)


def test_unenforced_cap_keeps_every_id_but_the_prompt_still_asks_for_up_to_three():
    from s3ray.agent.prompt import searcher_messages

    cfg = AgentConfig(select_cap=3, enforce_select_cap=False)
    context = select_context([INITIAL, SEARCH1], [(1, [1, 2, 3, 4, 5])], cfg)
    assert ids(context)[:5] == ["a1", "a2", "a3", "a4", "a5"]
    assert ids(select_context([INITIAL, SEARCH1], [(1, [1, 2, 3, 4, 5])], AgentConfig()))[:4] == \
        ["a1", "a2", "a3", "i1"]
    prompt = " ".join(m["content"] for m in searcher_messages("q?", INITIAL, cfg))
    assert "up to 3" in prompt
