"""Rollout: searcher episodes at scale, token in / token out, with Gain-Beyond-RAG rewards.

- :mod:`~s3ray.rollout.engine` (one module per engine): ``SamplingParams``, ``Generation(token_ids,
  logprobs, finish_reason)``, the ``RolloutEngine`` protocol (``await generate(prompt_ids, sampling)``,
  ``await load_state_dict(state, version)``, ``.version``), ``HFEngine`` (transformers, dynamic batching;
  CPU or GPU), ``VLLMEngine`` (GPU).
- :mod:`~s3ray.rollout.policy`: ``Policy`` (``await act(token_ids, env, sampling) -> Generation``):
  ``EnginePolicy(engine)`` (the model) and ``TeacherPolicy`` (the warm start's rule-based teacher, which
  reads the environment's state).
- :mod:`~s3ray.rollout.runner`: ``await run_episode(env, question, initial_docs, policy, tokenizer,
  sampling, sample_index) -> Episode``, the token-in/token-out driver of one episode over an
  :class:`~s3ray.agent.environment.S3Environment`.
- :mod:`~s3ray.rollout.actor`: ``RolloutActor``: an engine, the retriever client and the reward scorer;
  ``run(items, greedy, with_reward, policy)`` runs its episodes concurrently.
- :mod:`~s3ray.rollout.pool`: ``create_pool(cfg, model_dir)`` -> the named ``rollout_pool`` actor:
  ``run.remote(questions, greedy=False, samples_per_question=1, with_reward=True, policy="model")`` ->
  ``Episode`` list in input order (question, then sample); ``update_weights.remote([state_ref], version)``;
  ``weight_transfer.remote(step, payload)`` / ``transfer_members.remote()`` (vLLM's NCCL transfer);
  ``ready.remote()``; ``stats.remote()``. Dead actors (and actors whose engine died: ``EngineDied``) are
  restarted and their episodes re-run; ``WeightsNeeded`` when a restarted actor needs weights that only
  the trainer can send (NCCL), then ``resume.remote()`` after a publish.
- :mod:`~s3ray.rollout.weight_sync`: ``weight_sync_for(cfg, pool).publish(weights, version)``, called by
  the trainer on rank 0 with a streamed ``Weights``: the object store for HF engines, vLLM's NCCL weight
  transfer for vLLM.
"""
