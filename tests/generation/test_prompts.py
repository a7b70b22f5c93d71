"""Prompt builders, the judge parser and the reader's inverse of the answer prompt."""

import pytest

from s3ray.generation import prompts
from s3ray.types import Doc

DOCS = [Doc("d7", "Tinted Windows (band)", "The band first played\nin Tulsa."), Doc("d9", "Paris", "Capital.")]


def test_answer_messages_hold_contexts_and_question():
    messages = prompts.answer_messages("Where did they first play?", DOCS)
    system, user = messages
    assert system["role"] == "system" and user == {"role": "user", "content": "Where did they first play?"}
    assert "(some may be irrelevant) as needed" in system["content"]
    assert "no other text" in system["content"]
    assert "Doc 1 (Title: Tinted Windows (band)) The band first played in Tulsa.\nDoc 2 (Title: Paris) Capital." \
        in system["content"]


def test_answer_messages_round_trip():
    question, docs = prompts.parse_answer_messages(prompts.answer_messages("Q?", DOCS))
    assert question == "Q?"
    assert [(d.id, d.title, d.text) for d in docs] == [("1", "Tinted Windows (band)", "The band first played in Tulsa."),
                                                       ("2", "Paris", "Capital.")]
    assert prompts.parse_answer_messages(prompts.answer_messages("Q?", [])) == ("Q?", [])
    assert prompts.parse_answer_messages(prompts.zero_shot_messages("Q?")) == ("Q?", [])


def test_parse_answer_messages_rejects_bad_input():
    with pytest.raises(ValueError, match="no user message"):
        prompts.parse_answer_messages([{"role": "system", "content": "x"}])
    bad = [{"role": "system", "content": f"{prompts.CONTEXT_START}\nnot a doc\n{prompts.CONTEXT_END}"},
           {"role": "user", "content": "Q?"}]
    with pytest.raises(ValueError, match="Doc i"):
        prompts.parse_answer_messages(bad)


def test_parse_answer_messages_reads_documents_of_another_template():
    other = [{"role": "system", "content": "Passages:\nThe band first played in Tulsa.\n\nParis is the capital."},
             {"role": "user", "content": "Where did the band first play?"}]
    question, docs = prompts.parse_answer_messages(other)
    assert question == "Where did the band first play?"
    assert [d.text for d in docs] == ["Passages:", "The band first played in Tulsa.", "Paris is the capital."]
    assert prompts.parse_answer_messages(prompts.cot_messages("Q?")) == ("Q?", [])  # context-free: no docs


def test_zero_shot_and_cot():
    zs = prompts.zero_shot_messages("Q?")
    assert zs[-1]["content"] == "Q?" and "contexts" not in zs[0]["content"]
    cot = prompts.cot_messages("Q?")
    assert "step by step" in cot[0]["content"] and "<answer>" in cot[0]["content"]
    assert prompts.extract_cot_answer("think... <answer>draft</answer> more <answer> Tulsa </answer>") == "Tulsa"
    assert prompts.extract_cot_answer("no tags here ") == "no tags here"


def test_judge_messages():
    [msg] = prompts.judge_messages("Q?", "It is Tulsa", ["Tulsa", "Tulsa, OK"])
    assert msg["role"] == "user"
    assert "['Tulsa', 'Tulsa, OK']" in msg["content"] and "It is Tulsa" in msg["content"]
    assert "yes or no" in msg["content"]
    # s3's wording by default: containment only, the question unseen; the lenient one is an option.
    assert "Q?" not in msg["content"] and "meaning" not in msg["content"]
    [lenient] = prompts.judge_messages("Q?", "It is Tulsa", ["Tulsa"], style="lenient")
    assert "Q?" in lenient["content"] and "meaning" in lenient["content"]
    with pytest.raises(ValueError, match="unknown judge style"):
        prompts.judge_messages("Q?", "x", ["y"], style="strict")


@pytest.mark.parametrize("reply, verdict", [
    ("Yes", True), ("yes.", True), ("YES, it does", True), ("No", False), ("no.", False),
    ("No, 'yes' is not in it", False), ("Not sure", None), ("", None), ("nope", None), ("eyes", None),
])
def test_parse_judge(reply, verdict):
    assert prompts.parse_judge(reply) is verdict


def test_mirage_judge_is_s3s_aligns_wording():
    """Compared byte for byte with s3's scripts/evaluation/context_mirage.py::evaluate_answer."""
    import hashlib

    [message] = prompts.judge_messages("Which?\nOptions:\nA: x\n", "A: x", ["A: x", "B"], style="aligns")
    text = message["content"]
    assert "Golden Answers (reference):\n- A: x\n- B\n\n" in text and "RAG System's Answer: A: x\n" in text
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "9047b3b27777256d"


def test_s3_answer_prompts_and_judge_are_the_originals():
    """Compared byte for byte with s3's generator_llms/local_inst.py (generate_answer for the local model and
    for Claude, check_if_response_is_correct_llm) before the digests were pinned."""
    import hashlib

    docs = [Doc("a", "Tinted Windows", "A band."), Doc("b", "Tulsa", "A city.")]

    def digest(messages):
        return hashlib.sha256(repr(messages).encode()).hexdigest()[:16]

    chat = prompts.answer_messages_as("s3", "Q?", docs)
    claude = prompts.answer_messages_as("s3_claude", "Q?", docs)
    assert chat[0]["content"].startswith("Use the following contexts (some might be irrelevant) on demand:\n"
                                         "Contexts:\nDoc 1 (Title: Tinted Windows) A band.\n")
    assert [m["role"] for m in claude] == ["user"] and "\n\nQuestion: Q?\n\n" in claude[0]["content"]
    judge = prompts.judge_messages("Q?", "It is Tulsa", ["Tulsa", "Tulsa, OK"], style="s3")
    assert "Golden answers: ['Tulsa', 'Tulsa, OK']" in judge[0]["content"]
    assert [digest(chat), digest(claude), digest(judge)] == ["f45abb20b155ab5a", "842e71d154b72ba3", "a4ffc4629e57c313"]
    assert prompts.answer_messages_as("s3ray", "Q?", docs) == prompts.answer_messages("Q?", docs)
    with pytest.raises(ValueError, match="unknown answer prompt"):
        prompts.answer_messages_as("other", "Q?", docs)


def test_s3_zero_shot_and_cot_prompts_are_the_originals():
    """Compared byte for byte with s3's generate_answer_zero_shot / generate_answer_cot (local and Claude
    forms) before the digests were pinned; s3 reads the first <answer>."""
    import hashlib

    def digest(messages):
        return hashlib.sha256(repr(messages).encode()).hexdigest()[:16]

    got = [digest(prompts.zero_shot_messages_as(s, "Q?")) for s in ("s3", "s3_claude")]
    got += [digest(prompts.cot_messages_as(s, "Q?")) for s in ("s3", "s3_claude")]
    assert got == ["f955f117b258c7f0", "7590685299db244a", "afac7ade9aa4f1ff", "ed3b39a125f2a7b3"]
    assert prompts.cot_messages_as("s3ray", "Q?") == prompts.cot_messages("Q?")
    assert prompts.extract_cot_answer("<answer>a</answer> then <answer>b</answer>", first=True) == "a"
    assert prompts.extract_cot_answer("<answer>a</answer> then <answer>b</answer>") == "b"
