"""Fine-tuning as a service: jobs that train a classification head on a frozen served model.

A job runs in its own worker process (``python -m server.finetune.worker``), never in the server:

- :mod:`~server.finetune.jobs` the plain values (job, event, metrics, states and phases);
- :mod:`~server.finetune.hyperparameters` training parameters, their defaults and checks;
- :mod:`~server.finetune.store` the persistent job, event and dataset store: one interface (tables in
  :mod:`~server.finetune.store_rows`), with
  :mod:`~server.finetune.store_sqlite` (embedded) and :mod:`~server.finetune.store_postgres` (shared);
- :mod:`~server.finetune.datasets` uploads, data-root directories and dataset validation;
- :mod:`~server.finetune.intake` dataset intake: uploads and directories become stored datasets;
- :mod:`~server.finetune.manager` queue, claims and leases, watchers, cancellation, recovery;
- :mod:`~server.finetune.journal` every job change: to the store, then watchers woken;
- :mod:`~server.finetune.runner` one claimed job in a worker: its messages, its outcome;
- :mod:`~server.finetune.worker_process` the worker process seen from the server (spawn, read, end);
- :mod:`~server.finetune.worker` the worker process itself (protocol, parent watch);
- :mod:`~server.finetune.messages` the typed messages a worker sends;
- :mod:`~server.finetune.pipeline` what a job does there: validate, extract, train, gate, export;
- :mod:`~server.finetune.trainer` the training recipe (cached features, head, metrics);
- :mod:`~server.finetune.report` metrics.json and the two plots;
- :mod:`~server.finetune.export` the fine-tuned SavedModel, published atomically.
"""
