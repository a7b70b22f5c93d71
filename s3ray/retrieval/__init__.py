"""Retrieval: corpus -> index (Ray Data) -> search (in-process or the Ray Serve app) -> client.

Public surface (other stages import only these):

- ``corpus.iter_corpus(path, layout, file_format, on_bad_row) -> Iterator[dict(id, title, text)]``,
  ``corpus.parse_row(row, layout)``, ``corpus.corpus_checksum(path)``
- ``indexing.build_index(cfg) -> Path``: doc store, embedding shards (resumable), FAISS (flat | ivf |
  hnsw), BM25 and ``manifest.json`` in ``cfg.index.dir``; reuses a complete matching index
- ``searchers.load_searcher(cfg) -> Searcher``: ``.search(queries, k) -> list[list[Doc]]`` (dense or BM25
  by ``cfg.retriever.backend``); refuses an index built from another corpus or encoder
- ``service.build_app(cfg)``, ``service.app_builder(args)``, ``service.serve_app(cfg)``, ``service.deploy(cfg) -> url``,
  ``service.serve_forever(cfg)``: the Ray Serve app, ``POST /retrieve`` (Search-R1 / s3 contract) and
  ``GET /retrieve/health``
- ``client.RetrieverClient(url, timeout_s, retries)``: ``.search(queries, k)``, ``await .asearch(queries, k)``,
  ``.health()``, ``RetrieverClient.from_config(cfg)``, ``.url``; ``client.RetrievalError``
- ``handle.in_cluster_retriever(cfg)``: for callers inside the cluster (rollout, precompute, reward), a
  ``HandleRetriever`` on the Serve app's deployment handle (same ``asearch`` / ``search``; concurrent
  searches of one caller go out as one call, cut into one chunk per replica when large), or the HTTP client
  when ``retriever.use_handle`` is off
- ``split.chunks(queries, replicas, min_queries)``, ``split.search_chunks(parts, search)``: a many-query
  request cut into one chunk per replica, and the chunks' results put back in query order
"""
