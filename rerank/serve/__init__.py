"""The batched reward server: ``cmirm serve --reward SPEC`` on Ray Serve.

* `config`: `ServeConfig`, every option of the server (validated before Ray starts);
* `app`: the Serve deployment (HTTP JSON API, dynamic batching with ``@serve.batch``, limits, token);
* `server`: `start_server` / `RunningServer.stop`, used by the command, the tests and the benchmark;
* `cli`: the ``serve`` command.

The wire format is `cmirm_plugin.scoring.wire` (shared with the client, `HttpScorer`).
"""
