"""Answer scoring: SQuAD-style metrics and s3's GenAcc (span match, then an LLM judge).

Used by the reward (rollout, agent), the naive-RAG cache and the evaluate stage; it imports none of
them. Import the submodules directly: :mod:`~s3ray.scoring.metrics`, :mod:`~s3ray.scoring.genacc`.
"""
