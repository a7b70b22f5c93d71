"""The reward: Gain Beyond RAG and the naive-RAG baseline it is measured against.

``gbr``: the formula and :class:`~s3ray.reward.gbr.RewardScorer` (scores finished episodes); ``record``: one
cached naive-RAG result and the identity that makes results comparable; ``cache``: the lookup and the
paper's training filter; ``naive``: naive RAG's answers and GenAcc (the precompute and a cache miss share
it); ``services``: the retriever, generator, GenAcc scorer and cache, built from one config.
"""
