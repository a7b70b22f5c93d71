"""Answer scoring: SQuAD-style metrics and s3's GenAcc (span match, then an LLM judge).

Used by the reward (:mod:`s3ray.reward`) and the evaluate stage; it imports only :mod:`s3ray.generation`
(the judge's client and prompts). Import the submodules directly: :mod:`~s3ray.scoring.metrics`, :mod:`~s3ray.scoring.genacc`.
"""
