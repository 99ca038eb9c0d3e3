"""The imageserve API: ``.proto`` sources and, next to them, the Python code generated from them.

Regenerate after editing a ``.proto``: ``python -m protos.generate`` (a test fails when stale).
Import the generated modules from :mod:`protos.imageserve.v1`.
"""
