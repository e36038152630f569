"""Retrieval quality through the live deployment: `python -m evaluation` / `make eval`.

One module per job: `dataset` (BEIR layout, streamed), `first_stage` (TREC run file or BM25),
`rerank` (the served `rerank` ensemble through our client), `metrics` (pytrec_eval),
`published` (the model card's figures), `report` (JSON, markdown, PNG, TREC run) and
`mteb_adapter` (MTEB's cross-encoder interface over our client).
"""
