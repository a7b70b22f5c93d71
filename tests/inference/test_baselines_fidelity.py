"""Each baseline's faithful default, pinned: the prompt text it sends (a digest of the whole text, and
the lines a reader would check), the sampling it asks for, and its query rule.

The digests were taken after the texts were compared byte for byte with the s3 repo's functions
(``scripts/baselines/ircot.py::build_prompt``, ``scripts/baselines/search_o1.py``'s two instructions,
``generator_llms/query_rewrite.py::format_prompt``, ``scripts/data_process/process_mirage_r1.py::make_prefix``).
A changed digest means the prompt drifted from the original: restore it, or move the change behind an option.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from s3ray.config import InferenceConfig
from s3ray.inference import boolean_query, deepretrieval, ircot, search_o1, search_r1
from s3ray.types import Doc

from .fakes import FakeRetriever, ScriptedLLM, question

DOCS = [Doc("a", "Tinted Windows", "A band."), Doc("b", "Tulsa", "A city.")]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_ircot_prompt_is_s3s():
    prompt = ircot.original_prompt("Q?", [DOCS, DOCS[:1]], ["s1 <search_complete>No</search_complete>"])
    assert prompt.startswith("Question: Q?\n\nContext:\nDoc 1 (Title: Tinted Windows) A band.\n")
    assert "\nChain of Thought:\n1. s1 <search_complete>No</search_complete>\n" in prompt
    assert prompt.endswith("Now continue reasoning:")
    assert digest(prompt) == "cdd508625a8df764"


def test_search_o1_prompts_are_s3s():
    assert digest(search_o1.first_prompt("Q?", 4)) == "7f12f38304662e5c"
    assert "The maximum number of search attempts is limited to 4." in search_o1.first_prompt("Q?", 4)
    analysis = search_o1.reason_in_documents_prompt("prev", "qq", ircot.render_block(DOCS))
    assert digest(analysis) == "f2ab42339919ad70"


def test_search_r1_prompt_is_the_checkpoints_template():
    inf = InferenceConfig()
    text = inf.search_r1_template.replace("{prompt}", search_r1.PROMPT.format(question="Q?"))
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert text.endswith("Question: Q?\n<|im_end|>\n<|im_start|>assistant\n")
    assert digest(text) == "5a655efac264a5a2"


def test_deepretrieval_prompt_is_s3s():
    messages = deepretrieval.rewrite_messages("Q?")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].endswith("Here's the user query:\nQ?\nAssistant: Let me rewrite the query "
                                           "with reasoning. \n<think>\n")
    assert digest(repr(messages)) == "a1db6296b303ec53"


def test_sampling_defaults_are_the_originals():
    inf = InferenceConfig()
    assert (inf.ircot_sampling.temperature, inf.ircot_sampling.top_p, inf.ircot_sampling.max_tokens) == (0.7, 0.95, 2048)
    assert (inf.search_o1_sampling.temperature, inf.search_o1_sampling.top_p,
            inf.search_o1_sampling.max_tokens) == (0.7, 0.95, 2048)
    assert (inf.search_r1_sampling.temperature, inf.search_r1_sampling.top_p,
            inf.search_r1_sampling.max_tokens) == (0.0, None, 500)
    assert (inf.deepretrieval_sampling.temperature, inf.deepretrieval_sampling.top_p,
            inf.deepretrieval_sampling.max_tokens) == (0.7, None, 512)
    assert (inf.baseline_k, inf.ircot_max_steps, inf.search_o1_max_searches, inf.search_r1_max_turns) == (3, 4, 4, 4)
    assert (inf.ircot_style, inf.ircot_dedup, inf.search_o1_context, inf.search_r1_api, inf.search_r1_final_turn,
            inf.deepretrieval_query, inf.deepretrieval_on_failed_rewrite, inf.query_without_options) == \
        ("original", False, "raw_docs", "completions", True, "bag_of_words", "no_context", True)


@pytest.mark.parametrize("make, script", [
    (lambda s: ircot.IrcotGatherer(FakeRetriever(), s[0], 3, 1, s[1]), ["x <search_complete>Yes</search_complete>"]),
    (lambda s: search_o1.SearchO1Gatherer(FakeRetriever(), s[0], 3, 1, s[1]), ["no search"]),
    (lambda s: search_r1.SearchR1Gatherer(FakeRetriever(), s[0], 3, 1, s[1]), ["<answer>x</answer>"]),
    (lambda s: deepretrieval.DeepRetrievalGatherer(FakeRetriever(), s[0], 3, s[1]), ['{"query": "x"}']),
])
def test_each_baseline_sends_its_sampling(make, script):
    from s3ray.config import SamplingConfig

    llm, sampling = ScriptedLLM(script), SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=2048)
    asyncio.run(make((llm, sampling)).gather([question()]))
    assert llm.sampling == [{"max_tokens": 2048, "temperature": 0.7, "top_p": 0.95}]


# --- Boolean queries over BM25 -------------------------------------------------------------------
def test_bag_of_words_drops_operators_as_pyserini_did():
    assert boolean_query.bag_of_words('("Tinted Windows" OR band) AND debut NOT 2011') == \
        "Tinted Windows band debut 2011"


@pytest.mark.parametrize("query, text, expected", [
    ("(Tinted Windows) AND (Tulsa OR debut)", "Tinted Windows played Tulsa", True),
    ("(Tinted Windows) AND (Tulsa OR debut)", "Tinted Windows played Boston", False),
    ("band NOT Tulsa", "a band from Tulsa", False),
    ("band NOT Tulsa", "a band from Boston", True),
    ("a OR b AND c", "a", True),  # AND binds tighter: a OR (b AND c)
    ("a OR b AND c", "b", False),
    ("tinted windows", "windows tinted", True),  # juxtaposed terms are ANDed
    ('"tinted windows"', "windows tinted", False),  # a phrase keeps its order
    ('"tinted windows"', "the Tinted-Windows band", True),
])
def test_boolean_matching(query, text, expected):
    assert boolean_query.matches(boolean_query.parse(query), text) is expected


@pytest.mark.parametrize("query", ["(a AND b", "a AND", "OR a", "()", ")"])
def test_boolean_syntax_errors(query):
    with pytest.raises(boolean_query.QuerySyntaxError):
        boolean_query.parse(query)


def test_positive_terms_skip_negated_ones():
    tree = boolean_query.parse('("Tinted Windows" OR band) AND NOT (Boston OR NOT Tulsa)')
    assert boolean_query.positive_terms(tree) == ["tinted", "windows", "band", "tulsa"]
