"""Listen to a run and vote on it: the static HTML report, the A/B review app, and human votes as pairs.

- `rerank.listen.run_view`: one run directory as the listening tools see it (`load_listen_run`):
  the manifest's candidates (`rerank.run_records`) joined with their ``ranking.jsonl`` records.
- `rerank.listen.report_html`: ``cmirm report`` (`write_report`), a self-contained static site.
- `rerank.listen.pairs`: which two candidates a reviewer hears next (``--pairs``).
- `rerank.listen.votes`: votes as CMI-Pref pair rows in ``RUN_DIR/votes.jsonl`` (locked appends),
  agreement with the reward model and between reviewers, merging (``cmirm votes``).
- `rerank.listen.review_app`: ``cmirm review``, the blind A/B listening app (Gradio, extra ``[ui]``).
- `rerank.listen.synthetic`: synthetic run directories (tests, benchmarks, screenshots).
- `rerank.listen.cli`: the ``report``, ``review`` and ``votes`` commands.
"""
