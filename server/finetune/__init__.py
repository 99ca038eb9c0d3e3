"""Fine-tuning as a service: jobs that train a classification head on a frozen served model.

A job runs in its own worker process (``python -m server.finetune.worker``), never in the server:

- :mod:`~server.finetune.jobs` the plain values (job, event, metrics, states and phases);
- :mod:`~server.finetune.hyperparameters` training parameters, their defaults and checks;
- :mod:`~server.finetune.store` the persistent job, event and dataset store (SQLite);
- :mod:`~server.finetune.datasets` uploads, data-root directories and dataset validation;
- :mod:`~server.finetune.manager` queue, scheduling, watchers, cancellation, restart recovery;
- :mod:`~server.finetune.workers` the worker process seen from the server (spawn, protocol, exit);
- :mod:`~server.finetune.worker` the worker process itself (protocol, parent watch);
- :mod:`~server.finetune.pipeline` what a job does there: validate, extract, train, gate, export;
- :mod:`~server.finetune.trainer` the training recipe (cached features, head, metrics);
- :mod:`~server.finetune.report` metrics.json and the two plots;
- :mod:`~server.finetune.export` the fine-tuned SavedModel, published atomically.
"""
