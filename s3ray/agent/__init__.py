"""The s3 searcher's episode semantics: the environment (its rules: turn budget, searches, nudges), the
prompt, turn parser, observations, context selection, the episode's token record and typed trace, and a
rule-based warm-start policy over the environment's state.

Nothing here starts Ray or talks to a model; :mod:`s3ray.rollout` drives the environment with tokens.
"""
