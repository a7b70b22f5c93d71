"""Each gatherer's parsing and control flow, with a scripted retriever and reasoner."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from s3ray.config import SamplingConfig, load_config
from s3ray.inference import deepretrieval, ircot, s3, search_o1, search_r1
from s3ray.inference.base import GatheredContext
from s3ray.inference.cot import cot_gatherer
from s3ray.inference.direct import direct_gatherer
from s3ray.inference.naive_rag import NaiveRagGatherer
from s3ray.types import Doc

from .fakes import FakeRetriever, ScriptedLLM, question


def run(coro):
    return asyncio.run(coro)


def test_context_round_trips_through_json():
    ctx = GatheredContext.of(question(), [Doc("d1", "T", "x", 0.5)], {"queries": ["a"]}, answer_mode="cot")
    back = GatheredContext.from_dict(json.loads(json.dumps(ctx.to_dict())))
    assert back == ctx
    with pytest.raises(ValueError, match="answer_mode"):
        GatheredContext.from_dict(ctx.to_dict() | {"answer_mode": "oracle"})


def test_no_retrieval_rows_have_no_docs_and_name_their_prompt():
    qs = [question(0), question(1)]
    direct = run(direct_gatherer().gather(qs))
    cot = run(cot_gatherer().gather(qs))
    assert [c.answer_mode for c in direct] == ["zero_shot"] * 2 and [c.answer_mode for c in cot] == ["cot"] * 2
    assert all(c.docs == [] for c in direct + cot)
    assert [c.question_id for c in cot] == ["q000", "q001"]


def test_naive_rag_is_one_batched_top_k_call():
    retriever = FakeRetriever()
    qs = [question(0, "first?"), question(1, "second?")]
    out = run(NaiveRagGatherer("naive_rag", retriever, k=3).gather(qs))
    assert retriever.calls == [(["first?", "second?"], 3)]
    assert [d.id for d in out[1].docs] == ["second?#0", "second?#1", "second?#2"]
    assert out[0].answer_mode == "rag" and out[0].trace["queries"] == ["first?"]


# --- IRCoT -------------------------------------------------------------------------------------
S = SamplingConfig()


@pytest.mark.parametrize("text, step, complete", [
    ("Tinted Windows formed in 2009. <search_complete>No</search_complete>", "Tinted Windows formed in 2009.",
     False),
    ("It played in Tulsa.\n<search_complete> yes </search_complete>", "It played in Tulsa.", True),
    ("no tag at all", "no tag at all", None),
])
def test_ircot_step_parsing(text, step, complete):
    assert ircot.parse_step(text) == (step, complete)


@pytest.mark.parametrize("text, query, stop", [
    ("The band formed in 2009.\nIt toured.\n<search_complete>No</search_complete>",
     "The band formed in 2009.\nIt toured.", False),
    ("So it is Tulsa. <search_complete>Yes</search_complete>", "So it is Tulsa.", True),
    ("So it is Tulsa. <search_complete> Yes </search_complete>", "So it is Tulsa.", False),  # s3's exact test
    ("no tag", "no tag", False),
])
def test_ircot_original_query_rule(text, query, stop):
    assert ircot.original_query(text) == (query, stop)


def test_ircot_original_queries_with_the_whole_output_and_keeps_repeats():
    retriever = FakeRetriever(shared=("gold",))
    llm = ScriptedLLM(["Step one.\nStep one b. <search_complete>No</search_complete>",
                       "Step two. <search_complete>Yes</search_complete>"])
    [ctx] = run(ircot.IrcotGatherer(retriever, llm, k=2, max_steps=4, sampling=S).gather([question()]))
    assert [c[0] for c in retriever.calls] == [["Who founded the band?"], ["Step one.\nStep one b."]]
    assert ctx.trace["stop"] == "complete"
    # "gold" came back for both queries and is kept twice, as s3 concatenates the blocks.
    assert [d.id for d in ctx.docs] == ["gold", "Who founded the band?#0", "gold", "Step one.\nStep one b.#0"]
    [[second]] = llm.messages[1:]
    assert second["role"] == "user" and "1. Step one.\nStep one b. <search_complete>No</search_complete>" \
        in second["content"]
    dedup = ircot.IrcotGatherer(FakeRetriever(shared=("gold",)),
                                ScriptedLLM(["a <search_complete>No</search_complete>", "b"]),
                                k=2, max_steps=2, sampling=S, dedup=True)
    [ctx] = run(dedup.gather([question()]))
    assert [d.id for d in ctx.docs].count("gold") == 1


def test_ircot_one_sentence_style_dedups_and_puts_docs_in_the_context_block():
    from s3ray.generation.prompts import parse_answer_messages

    retriever = FakeRetriever(shared=("gold",))
    llm = ScriptedLLM(["Step one. <search_complete>No</search_complete>",
                       "Step two. <search_complete>Yes</search_complete>"])
    [ctx] = run(ircot.IrcotGatherer(retriever, llm, k=2, max_steps=4, sampling=S, style="one_sentence",
                                    dedup=True).gather([question()]))
    assert [c[0] for c in retriever.calls] == [["Who founded the band?"], ["Step one."]]
    assert ctx.trace["steps"] == ["Step one.", "Step two."]
    assert [d.id for d in ctx.docs] == ["gold", "Who founded the band?#0", "Step one.#0"]
    system, user = (m["content"] for m in llm.messages[1])
    assert "1. Step one." in user and "Doc 3 (Title: T Step one.#0)" in system
    docs = [Doc("a", "Tinted Windows", "A band.\nFormed 2009."), Doc("b", "Tulsa", "A city.")]
    _, parsed = parse_answer_messages(ircot.one_sentence_messages("Who?", docs, ["step"]))
    assert [(d.title, d.text) for d in parsed] == [("Tinted Windows", "A band. Formed 2009."), ("Tulsa", "A city.")]


def test_ircot_stops_after_max_steps_and_on_an_empty_step():
    retriever = FakeRetriever()
    llm = ScriptedLLM([f"s{i}" for i in range(3)])  # untagged: treated as not complete
    [ctx] = run(ircot.IrcotGatherer(retriever, llm, k=1, max_steps=3, sampling=S).gather([question()]))
    assert ctx.trace["stop"] == "max_steps" and ctx.trace["untagged_steps"] == 3
    assert len(retriever.calls) == 4 and len(ctx.docs) == 4
    llm = ScriptedLLM(["<search_complete>No</search_complete>"])
    [ctx] = run(ircot.IrcotGatherer(FakeRetriever(), llm, k=1, max_steps=3, sampling=S).gather([question()]))
    assert ctx.trace["stop"] == "empty_step" and ctx.trace["turns"] == 1


# --- Search-o1 ---------------------------------------------------------------------------------
def test_search_o1_parsing():
    text = f"I need the city. {search_o1.BEGIN_QUERY} Tinted Windows first show {search_o1.END_QUERY} ignored"
    assert search_o1.search_query(text) == "Tinted Windows first show"
    assert search_o1.search_query("no search here") is None
    assert search_o1.condensed_information("analysis...\n**Final Information:** They played Tulsa.") \
        == "They played Tulsa."
    assert search_o1.condensed_information("just text") == "just text"


def _o1_script():
    q = search_o1
    return ScriptedLLM([
        f"Think. {q.BEGIN_QUERY}band first show{q.END_QUERY} then more text",
        "**Final Information**\n\nThe band first played in Tulsa.",
        f"More. {q.BEGIN_QUERY}useless{q.END_QUERY}",
        "**Final Information**\n\nNo helpful information found.",
        "So the answer is Tulsa.",
    ])


def test_search_o1_hands_over_the_raw_docs_and_grows_one_prompt():
    q = search_o1
    llm, retriever = _o1_script(), FakeRetriever()
    [ctx] = run(q.SearchO1Gatherer(retriever, llm, k=3, max_searches=4, sampling=S).gather([question()]))
    assert ctx.trace["queries"] == ["band first show", "useless"] and ctx.trace["helpful_searches"] == 1
    assert [d.id for d in ctx.docs] == [f"{query}#{r}" for query in ("band first show", "useless") for r in range(3)]
    # The analysis saw the retrieved docs; the next reasoning call is the first prompt grown by the whole
    # first output and the whole analysis between the result markers.
    assert "Doc 3 (Title: T band first show#2) text of band first show#2" in llm.messages[1][0]["content"]
    third = llm.messages[2][0]["content"]
    assert third.startswith(llm.messages[0][0]["content"] + "\nThink. ")
    assert "then more text" in third
    assert f"\n{q.BEGIN_RESULT}\n**Final Information**\n\nThe band first played in Tulsa.\n{q.END_RESULT}\n" in third


def test_search_o1_analyses_context_and_max_searches():
    q = search_o1
    [ctx] = run(q.SearchO1Gatherer(FakeRetriever(), _o1_script(), k=3, max_searches=4, sampling=S,
                                   context="analyses").gather([question()]))
    assert [(d.title, d.text) for d in ctx.docs] == [("band first show", "The band first played in Tulsa.")]
    llm = ScriptedLLM([f"{q.BEGIN_QUERY}a{q.END_QUERY}", "Final Information: A.",
                       f"{q.BEGIN_QUERY}b{q.END_QUERY}", "Final Information: B."])
    [ctx] = run(q.SearchO1Gatherer(FakeRetriever(), llm, k=1, max_searches=2, sampling=S, context="analyses")
                .gather([question()]))
    assert [d.text for d in ctx.docs] == ["A.", "B."] and not llm.outputs


# --- Search-R1 ---------------------------------------------------------------------------------
def test_search_r1_parsing():
    assert search_r1.cut_at_action("<search> a </search><information>x</information>") == "<search> a </search>"
    # </search> wins wherever it is, as in s3's _postprocess_responses
    assert search_r1.cut_at_action("<answer>x</answer> <search>y</search> z") == "<answer>x</answer> <search>y</search>"
    assert search_r1.parse_action("<think>t</think><search> a b </search>") == ("search", "a b")
    assert search_r1.parse_action("<answer> Tulsa </answer>") == ("answer", "Tulsa")
    assert search_r1.parse_action("<search> </search>") == ("search", "")
    assert search_r1.parse_action("nothing") == ("invalid", "")


def test_search_r1_continues_one_text_over_completions_until_it_answers():
    llm = ScriptedLLM(["<think>?</think><search>band</search><information>made up</information>",
                       "I will guess",
                       "<search>city</search>",
                       "<answer>Tulsa</answer>"])
    retriever = FakeRetriever()
    gatherer = search_r1.SearchR1Gatherer(retriever, llm, k=3, max_turns=4, sampling=S,
                                          template="<u>{prompt}</u><a>")
    [ctx] = run(gatherer.gather([question()]))
    assert ctx.trace["queries"] == ["band", "city"] and ctx.trace["stop"] == "answer"
    assert ctx.trace["model_answer"] == "Tulsa"
    assert [d.id for d in ctx.docs] == ["band#0", "band#1", "band#2", "city#0", "city#1", "city#2"]
    first, last = llm.messages[0], llm.messages[3]
    assert first == "<u>" + search_r1.PROMPT.format(question="Who founded the band?") + "</u><a>"
    assert last.startswith(first + "<think>?</think><search>band</search>\n\n<information>Doc 1(Title: T band#0)")
    assert "made up" not in last and search_r1.INVALID_ACTION in last


def test_search_r1_last_turn_does_not_search_and_chat_api():
    llm = ScriptedLLM(["<search>a</search>", "<search>b</search>", "<search>c</search>"])
    [ctx] = run(search_r1.SearchR1Gatherer(FakeRetriever(), llm, k=1, max_turns=2, sampling=S).gather([question()]))
    assert ctx.trace["stop"] == "max_turns" and [d.id for d in ctx.docs] == ["a#0", "b#0"]
    assert ctx.trace["turns"] == 3 and not llm.outputs
    llm = ScriptedLLM(["<search>a</search>", "<answer>x</answer>"])
    [ctx] = run(search_r1.SearchR1Gatherer(FakeRetriever(), llm, k=1, max_turns=2, sampling=S, api="chat",
                                           final_turn=False).gather([question()]))
    assert llm.messages[1][1] == {"role": "assistant", "content": "<search>a</search>" +
                                  search_r1.render_information([Doc("a#0", "T a#0", "text of a#0")])}


# --- DeepRetrieval -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, query", [
    ('<think>x</think><answer>{"query": "(band) AND (Tulsa OR debut)"}</answer>', "(band) AND (Tulsa OR debut)"),
    ('{"query": "no tags"}', "no tags"),  # s3 adds the missing tags before parsing
    ('<answer>{"query": "unclosed"}', "unclosed"),
    ("<answer>plain words</answer>", None),  # not JSON: s3's extract_query raises
    ('<answer>{"other": 1}</answer>', None),
    ("no answer tag", None),
])
def test_deepretrieval_rewrite_parsing(text, query):
    assert deepretrieval.parse_rewrite(text) == query


def test_deepretrieval_bag_of_words_and_failed_rewrites():
    qs = [question(0, "q zero?"), question(1, "q one?")]
    outputs = ['<answer>{"query": "(Tinted Windows) AND (first OR show)"}</answer>', "garbage"]
    retriever = FakeRetriever()
    out = run(deepretrieval.DeepRetrievalGatherer(retriever, ScriptedLLM(outputs), k=2, sampling=S).gather(qs))
    assert retriever.calls == [(["Tinted Windows first show"], 2)]
    assert [c.trace["rewrite_failed"] for c in out] == [False, True] and out[1].docs == []
    assert out[0].docs[0].id == "Tinted Windows first show#0"
    retriever = FakeRetriever()
    out = run(deepretrieval.DeepRetrievalGatherer(retriever, ScriptedLLM(outputs), k=2, sampling=S,
                                                  on_failed_rewrite="question").gather(qs))
    assert sorted(c[0][0] for c in retriever.calls) == ["Tinted Windows first show", "q one"]


def test_deepretrieval_boolean_mode_filters_the_bm25_candidates():
    class Pool:
        calls = []

        async def asearch(self, queries, k):
            self.calls.append((queries, k))
            return [[Doc("1", "Tinted Windows", "a band from Tulsa"), Doc("2", "Tinted glass", "windows of cars"),
                     Doc("3", "Tinted Windows", "debut album in 2010")]]

    pool = Pool()
    llm = ScriptedLLM(['<answer>{"query": "(Tinted Windows) AND (Tulsa OR debut) NOT cars"}</answer>'])
    [ctx] = run(deepretrieval.DeepRetrievalGatherer(pool, llm, k=3, sampling=S, query_mode="boolean",
                                                    candidates=50).gather([question()]))
    assert pool.calls == [(["tinted windows tulsa debut"], 50)]
    assert [d.id for d in ctx.docs] == ["1", "3"] and ctx.trace["boolean_filter"]


# --- s3 ----------------------------------------------------------------------------------------
def test_s3_variants_switch_the_agent_context_rules(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    for name, (select, init) in s3.S3_VARIANTS.items():
        agent = s3.variant_config(cfg, name).agent
        assert (agent.use_selection, agent.use_initial_docs) == (select, init)
    assert cfg.agent.use_selection and cfg.agent.use_initial_docs  # the original is untouched


def test_s3_checkpoint_prefers_the_export_and_warns_on_the_untrained_fallback(tmp_path, caplog):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="no searcher"):
        s3.searcher_checkpoint(cfg)
    cfg.policy_model_dir.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        assert s3.searcher_checkpoint(cfg) == cfg.policy_model_dir
    assert "UNTRAINED" in caplog.text
    (cfg.train.dir / "export").mkdir(parents=True)
    assert s3.searcher_checkpoint(cfg) == cfg.train.dir / "export"
    cfg2 = load_config("test", [f"paths.work_dir={tmp_path}", f"inference.searcher_checkpoint={tmp_path}/nope"])
    with pytest.raises(FileNotFoundError, match="nope"):
        s3.searcher_checkpoint(cfg2)
