"""Search-o1, as the s3 paper re-implements it (``scripts/baselines/search_o1.py`` of the s3 repo).

The reasoner gets one user message: the Search-o1 instruction, the question and ``Assistant:``; each of
its outputs is appended to that text. When an output holds ``<|begin_search_query|>q<|end_search_query|>``
the top-k docs for q are read by a second, reason-in-documents call, whose whole output is appended as
``<|begin_search_result|>...<|end_search_result|>``; at most ``max_searches`` rounds.

The context handed to the generator (``inference.search_o1_context``) is, as s3's evaluation
(``scripts/evaluation/context_searcho1_general.py``) builds it, every retrieved doc (``raw_docs``); or,
as s3ray did before, the condensed analyses (``analyses``, one doc per helpful search).
"""

from __future__ import annotations

import re

from s3ray.config import SamplingConfig
from s3ray.inference.base import GatheredContext, PerQuestionGatherer
from s3ray.inference.ircot import render_block
from s3ray.types import Doc, Question

BEGIN_QUERY, END_QUERY = "<|begin_search_query|>", "<|end_search_query|>"
BEGIN_RESULT, END_RESULT = "<|begin_search_result|>", "<|end_search_result|>"
_QUERY = re.compile(re.escape(BEGIN_QUERY) + r"(.*?)" + re.escape(END_QUERY), re.DOTALL)
_FINAL_INFO = re.compile(r"final information\**\s*:?\**\s*(.*)", re.IGNORECASE | re.DOTALL)
NO_HELPFUL_INFO = "no helpful information found"


def instruction(max_searches: int) -> str:
    """s3's ``get_multiqa_search_o1_instruction`` (Search-o1's multi-QA instruction)."""
    return (
        "You are a reasoning assistant with the ability to perform web searches to help "
        "you answer the user's question accurately. You have special tools:\n\n"
        f"- To perform a search: write {BEGIN_QUERY} your query here {END_QUERY}.\n"
        "Then, the system will search and analyze relevant web pages, then provide you with helpful "
        f"information in the format {BEGIN_RESULT} ...search results... {END_RESULT}.\n\n"
        "You can repeat the search process multiple times if necessary. The maximum number of search "
        f"attempts is limited to {max_searches}.\n\n"
        "Once you have all the information you need, continue your reasoning.\n\n"
        "Example:\n"
        "Question: \"Alice David is the voice of Lara Croft in a video game developed by which company?\"\n"
        "Assistant thinking steps:\n"
        "- I need to find out who voices Lara Croft in the video game.\n"
        "- Then, I need to determine which company developed that video game.\n\n"
        "Assistant:\n"
        f"{BEGIN_QUERY}Alice David Lara Croft voice{END_QUERY}\n\n"
        "(System returns processed information from relevant web pages)\n\n"
        "Assistant thinks: The search results indicate that Alice David is the voice of Lara Croft in a "
        "specific video game. Now, I need to find out which company developed that game.\n\n"
        "Assistant:\n"
        f"{BEGIN_QUERY}video game developed by Alice David Lara Croft{END_QUERY}\n\n"
        "(System returns processed information from relevant web pages)\n\n"
        "Assistant continues reasoning with the new information...\n\n"
        "Remember:\n"
        f"- Use {BEGIN_QUERY} to request a web search and end with {END_QUERY}.\n"
        "- When done searching, continue your reasoning.\n\n"
    )


def first_prompt(question: str, max_searches: int) -> str:
    return f"{instruction(max_searches)}\nQuestion: {question}\nAssistant:"


def reason_in_documents_prompt(prev_reasoning: str, query: str, documents: str) -> str:
    """s3's ``get_webpage_to_reasonchain_instruction`` (Search-o1's reason-in-documents instruction)."""
    return f"""**Task Instruction:**

You are tasked with reading and analyzing web pages based on the following inputs: **Previous Reasoning Steps**, **Current Search Query**, and **Searched Web Pages**. Your objective is to extract relevant and helpful information for **Current Search Query** from the **Searched Web Pages** and seamlessly integrate this information into the **Previous Reasoning Steps** to continue reasoning for the original question.

**Guidelines:**

1. **Analyze the Searched Web Pages:**
- Carefully review the content of each searched web page.
- Identify factual information that is relevant to the **Current Search Query** and can aid in the reasoning process for the original question.

2. **Extract Relevant Information:**
- Select the information from the Searched Web Pages that directly contributes to advancing the **Previous Reasoning Steps**.
- Ensure that the extracted information is accurate and relevant.

3. **Output Format:**
- **If the web pages provide helpful information for current search query:** Present the information beginning with `**Final Information**` as shown below.
**Final Information**

[Helpful information]

- **If the web pages do not provide any helpful information for current search query:** Output the following text.

**Final Information**

No helpful information found.

**Inputs:**
- **Previous Reasoning Steps:**  
{prev_reasoning}

- **Current Search Query:**  
{query}

- **Searched Web Pages:**  
{documents}

Now you should analyze each web page and find helpful information based on the current search query "{query}" and previous reasoning steps.
"""  # noqa: W291 (the two trailing spaces are the original's)


def search_query(text: str) -> str | None:
    """The stripped query of the first complete search call, None if there is none (s3's rule)."""
    match = _QUERY.search(text)
    return match.group(1).strip() if match else None


def condensed_information(text: str) -> str:
    """The part after 'Final Information' (the whole text if the marker is missing)."""
    match = _FINAL_INFO.search(text)
    return " ".join((match.group(1) if match else text).split())


class SearchO1Gatherer(PerQuestionGatherer):
    name = "search_o1"

    def __init__(self, retriever, reasoner, k: int, max_searches: int, sampling: SamplingConfig,
                 context: str = "raw_docs"):
        if context not in ("raw_docs", "analyses"):
            raise ValueError(f"unknown Search-o1 context {context!r}; known: raw_docs, analyses")
        self.retriever, self.reasoner = retriever, reasoner
        self.k, self.max_searches, self.sampling, self.context = k, max_searches, sampling, context

    async def _call(self, prompt: str) -> str:
        s = self.sampling
        out = await self.reasoner.achat([{"role": "user", "content": prompt}], max_tokens=s.max_tokens,
                                        temperature=s.temperature, top_p=s.top_p)
        return out.strip()

    async def gather_one(self, question: Question) -> GatheredContext:
        prompt = first_prompt(question.question, self.max_searches)
        chain, queries, raw, retrieved, analyses = [], [], [], [], []
        for _ in range(self.max_searches):
            output = await self._call(prompt)
            raw.append(output)
            chain.append(output)
            prompt += "\n" + output
            query = search_query(output)
            if not query:  # concluded without (another) search; s3 would also search for an empty query
                break
            queries.append(query)
            [docs] = await self.retriever.asearch([query], self.k)
            retrieved.extend(docs)
            analysis = await self._call(reason_in_documents_prompt("\n".join(chain), query, render_block(docs)))
            raw.append(analysis)
            injection = f"\n{BEGIN_RESULT}\n{analysis}\n{END_RESULT}\n"
            prompt += injection
            chain.append(injection)
            info = condensed_information(analysis)
            if info and info.lower().rstrip(".") != NO_HELPFUL_INFO:
                analyses.append(Doc(id=f"{question.id}#analysis{len(queries)}", title=query, text=info))
        trace = {"turns": len(raw), "queries": queries, "raw_outputs": raw,
                 "retrieved_ids": [d.id for d in retrieved], "helpful_searches": len(analyses)}
        return GatheredContext.of(question, retrieved if self.context == "raw_docs" else analyses, trace)
