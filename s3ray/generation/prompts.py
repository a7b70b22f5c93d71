"""Every prompt the frozen generator and the judge see, in one module.

Answer prompt (s3's ``generate_answer``): the system message tells the model to use the contexts
"(some may be irrelevant) as needed" and to answer directly with no other text; the user message is
the bare question. The documents sit in the system message between two fixed marker lines, one
document per line in s3's ``Doc i (Title: T) text`` form (newlines inside a document are folded into
spaces), so a server can recover them: :func:`parse_answer_messages` is the inverse used by the
extractive reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from s3ray.types import Doc

Messages = list[dict[str, str]]

CONTEXT_START = "<contexts>"
CONTEXT_END = "</contexts>"

ANSWER_SYSTEM = (
    "Use the following contexts (some may be irrelevant) as needed to answer the question.\n"
    f"{CONTEXT_START}\n{{contexts}}\n{CONTEXT_END}\n"
    "Answer the question directly. Give only the answer, with no other text, explanation or reasoning."
)
ZERO_SHOT_SYSTEM = (
    "Answer the question directly. Give only the answer, with no other text, explanation or reasoning."
)
COT_SYSTEM = (
    "Answer the question. Think step by step first, then give the final answer, as short as possible, "
    "between <answer> and </answer>, e.g. <answer>Paris</answer>."
)
# s3's judge (``check_if_response_is_correct_llm``): is any golden answer, shown as a Python list,
# contained in the response? The question is not shown. The lenient variant shows the question and also
# accepts the same meaning in other words (judge.style=lenient).
JUDGE_TEMPLATES = {
    "contains": (
        "Is any of the golden answers {golds} contained in the response below?\n"
        "Response: {response}\n"
        "Reply with one word: yes or no."
    ),
    "lenient": (
        "Decide whether the response contains any of the golden answers (the same entity, value or "
        "meaning counts, wording may differ).\n"
        "Question: {question}\n"
        "Golden answers: {golds}\n"
        "Response: {response}\n"
        "Reply with one word: yes or no."
    ),
    # s3's own wording (generator_llms/local_inst.py::check_if_response_is_correct_llm), golds as a Python list
    "s3": (
        "Please check if any of the golden answers is contained in the following response: {response}\n\n"
        "Golden answers: {golds}\n\nPlease directly answer with 'yes' or 'no'."
    ),
    # s3's MIRAGE judge (scripts/evaluation/context_mirage.py::evaluate_answer): does the answer "align
    # with" the golden answers, shown one per "- " line; the only GenAcc test on the medical sets.
    "aligns": (
        "You are an evaluator for question-answering systems. Your task is to determine if the given answer "
        "aligns with the golden answers.\n\n"
        "Question: {question}\n\n"
        "RAG System's Answer: {response}\n\n"
        "Golden Answers (reference):\n{golds}\n\n"
        "Please evaluate if the RAG system's answer aligns with the golden answers. The answer should be "
        "considered correct if it:\n"
        "- Contains the same key information as the golden answers\n"
        "- Expresses the same meaning, even if using different words\n"
        "- Is factually consistent with the golden answers\n\n"
        'Respond with ONLY "yes" if the answer aligns with the golden answers, or "no" if it does not. '
        "Do not include any other text or explanation."
    ),
}

_CONTEXT_FREE = {"", ZERO_SHOT_SYSTEM, COT_SYSTEM}
_DOC_LINE = re.compile(r"^Doc (\d+) \(Title: (.*?)\) (.*)$")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_docs(docs: Sequence[Doc]) -> str:
    """``Doc 1 (Title: T) text`` lines, numbered from 1 (s3's context format)."""
    return "\n".join(Doc(d.id, _one_line(d.title), _one_line(d.text)).render(i)
                     for i, d in enumerate(docs, start=1))


def answer_messages(question: str, docs: Sequence[Doc]) -> Messages:
    """s3's answer prompt: the contexts in the system message, the question as the user message."""
    return [{"role": "system", "content": ANSWER_SYSTEM.format(contexts=render_docs(docs))},
            {"role": "user", "content": question}]


# s3's answer prompts, word for word (generator_llms/local_inst.py::generate_answer): the chat form its local
# generator got, and the one user message Claude got in the evaluation scripts. The docs are s3's
# ``Doc i (Title: T) text`` lines; the extractive reader reads them as lines (no context block).
S3_ANSWER_SYSTEM = ("Use the following contexts (some might be irrelevant) on demand:\nContexts:\n{contexts}\n\n"
                    "Important: You MUST directly answer the question without any other text and thinking.")
S3_CLAUDE_ANSWER = ("Use the following contexts (some might be irrelevant) on demand:\n\nContexts:\n{contexts}\n\n"
                    "Question: {question}\n\n"
                    "Important: You MUST directly answer the question without any other text and thinking.")
ANSWER_PROMPTS = ("s3ray", "s3", "s3_claude")
S3_ZERO_SHOT = "Important: You MUST directly answer the question without any other text and thinking."
_S3_COT_STEPS = (
    "1. First, think through the problem step by step\n"
    "2. Show your reasoning process\n"
    "3. Finally, provide the answer in <answer> tags\n\n"
    "Example format:\n"
    "Let me think through this step by step:\n"
    "1. First, I need to consider...\n"
    "2. Then, I should look at...\n"
    "3. Based on this analysis...\n\n"
    "<answer>The final answer goes here</answer>\n\n"
    "Important: \n"
    "- Make sure to clearly separate your reasoning steps from the final answer\n"
    "- Always put your final answer between <answer> and </answer> tags\n"
    "- The answer should be concise and directly answer the question"
)
S3_COT_SYSTEM = "You are a helpful assistant that solves questions step by step. \nFor each question:\n" + _S3_COT_STEPS
S3_CLAUDE_COT = ("You are a helpful assistant that solves questions step by step. \nFor this question:\n"
                 + _S3_COT_STEPS + "\n\nQuestion: {question}")


def _in_style(style: str, s3ray: Callable[[], Messages], question: str, system: str, claude: str) -> Messages:
    """One prompt in one of :data:`ANSWER_PROMPTS`: s3ray's builder; ``s3``, the original's instruction as
    the system message and the question as the user's (its local generator); ``s3_claude``, the one user
    message the original sent Claude."""
    if style == "s3ray":
        return s3ray()
    if style == "s3":
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if style == "s3_claude":
        return [{"role": "user", "content": claude}]
    raise ValueError(f"unknown answer prompt {style!r}; known: {list(ANSWER_PROMPTS)}")


def answer_messages_as(style: str, question: str, docs: Sequence[Doc]) -> Messages:
    """The answer prompt (s3's ``generate_answer``); ``s3ray`` is :func:`answer_messages`, whose context block
    every backend reads."""
    contexts = render_docs(docs) + "\n"  # s3's retrieval scripts end every doc line with a newline
    return _in_style(style, lambda: answer_messages(question, docs), question,
                     S3_ANSWER_SYSTEM.format(contexts=contexts),
                     S3_CLAUDE_ANSWER.format(contexts=contexts, question=question))


def zero_shot_messages_as(style: str, question: str) -> Messages:
    """The direct row's prompt (s3's ``generate_answer_zero_shot``)."""
    return _in_style(style, lambda: zero_shot_messages(question), question, S3_ZERO_SHOT,
                     f"{S3_ZERO_SHOT}\n\nQuestion: {question}")


def cot_messages_as(style: str, question: str) -> Messages:
    """The CoT row's prompt (s3's ``generate_answer_cot``)."""
    return _in_style(style, lambda: cot_messages(question), question, S3_COT_SYSTEM,
                     S3_CLAUDE_COT.format(question=question))


def zero_shot_messages(question: str) -> Messages:
    return [{"role": "system", "content": ZERO_SHOT_SYSTEM}, {"role": "user", "content": question}]


def cot_messages(question: str) -> Messages:
    return [{"role": "system", "content": COT_SYSTEM}, {"role": "user", "content": question}]


def extract_cot_answer(text: str, first: bool = False) -> str:
    """The text inside the last ``<answer>...</answer>`` (the first with ``first``, as s3's
    ``generate_answer_cot`` reads it); the whole output if the tag is missing."""
    found = _ANSWER_TAG.findall(text)
    return found[0 if first else -1].strip() if found else text.strip()


def judge_messages(question: str, response: str, golds: Sequence[str], style: str = "contains") -> Messages:
    """The judge's one user message, asking yes/no; ``style`` names one of :data:`JUDGE_TEMPLATES`."""
    if style not in JUDGE_TEMPLATES:
        raise ValueError(f"unknown judge style {style!r}; known: {sorted(JUDGE_TEMPLATES)}")
    shown = "\n".join(f"- {g}" for g in golds) if style == "aligns" else str(list(golds))
    return [{"role": "user", "content": JUDGE_TEMPLATES[style].format(question=question, golds=shown,
                                                                      response=response)}]


def parse_judge(text: str) -> bool | None:
    """The judge's verdict: True for "yes", False for "no", None if the reply holds neither word.

    The first of the two words wins ("No, 'yes' is not in it" is False)."""
    words = re.findall(r"[a-z]+", text.lower())
    for word in words:
        if word == "yes":
            return True
        if word == "no":
            return False
    return None


def parse_answer_messages(messages: Messages) -> tuple[str, list[Doc]]:
    """Inverse of :func:`answer_messages`: (question, docs). Docs get ids ``"1"``, ``"2"``, ...

    The question is the last user message. The documents are, in this order of preference:

    - the lines of the system message's context block, each in s3's ``Doc i (Title: T) text`` form
      (anything else there is a ValueError naming that form);
    - without a block, the text of the other messages (system, earlier turns), one document per
      non-empty line, unless it is only one of this module's context-free instructions (zero-shot,
      CoT), which give ``(question, [])``: another prompt template still gets its documents read.
    """
    users = [m["content"] for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("the messages hold no user message (the question); expected s3's answer prompt: "
                         f"the documents as 'Doc i (Title: T) text' lines between {CONTEXT_START} and "
                         f"{CONTEXT_END} in the system message, the question as the user message")
    question = users[-1]
    system = "\n".join(m["content"] for m in messages if m.get("role") == "system")
    if CONTEXT_START in system and CONTEXT_END in system:
        block = system.split(CONTEXT_START, 1)[1].split(CONTEXT_END, 1)[0]
        lines = block.strip().splitlines()
        for line in lines:
            if _DOC_LINE.match(line.strip()) is None:
                raise ValueError(f"context line is not 'Doc i (Title: T) text': {line[:80]!r}")
    else:
        last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        others = [m["content"] for i, m in enumerate(messages) if i != last_user]
        if all(text.strip() in _CONTEXT_FREE for text in others):
            return question, []
        lines = [line for text in others for line in text.splitlines()]
    docs = []
    for line in (line.strip() for line in lines):
        m = _DOC_LINE.match(line)
        if m is not None:
            docs.append(Doc(id=str(len(docs) + 1), title=m.group(2), text=m.group(3)))
        elif line:
            docs.append(Doc(id=str(len(docs) + 1), title="", text=line))
    return question, docs
