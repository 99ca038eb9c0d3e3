"""The imageserve gRPC model server: a plain serving core (repository, batching, inference,
fine-tuning) under a thin gRPC layer (:mod:`server.api`). Run it with ``python -m server``."""

__version__ = "0.1.0"
