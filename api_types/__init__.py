"""The API's value types as plain Python (:mod:`api_types.results`): predictions, results, model
status, fine-tuning jobs, hyperparameters and datasets.

The client returns them and the server's core computes them: one definition on both sides of the
wire. Importing them loads neither gRPC nor the client SDK (``from client import ...`` re-exports them).
"""
