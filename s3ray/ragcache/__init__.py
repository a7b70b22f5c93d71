"""The naive-RAG cache's stages: ``precompute.precompute`` fills it with Ray Data, ``s3_import`` reads s3's
released cache into it, ``baseline`` takes another gatherer's contexts as the baseline.

The records, the lookup and the training filter are the reward's (:mod:`s3ray.reward`).
"""
