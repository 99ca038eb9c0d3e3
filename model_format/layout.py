"""Where versions live: ``<root>/<name>/<version>/``, and the names of everything else in ``<name>/``.

- A model name is a plain directory name (:data:`MODEL_NAME_PATTERN`): letters, digits, ``.``, ``_``, ``-``.
- A version is a directory named by a canonical positive integer (``1``, ``12``; not ``01``, ``0``).
- ``.staging-<version>-<pid>-<random>``: a version being written; renamed to ``<version>`` when it
  is complete and verified (a reader never sees a half-written version on a local root).
- ``.rejected-<version>-<job>``: a fine-tuned version the server refused to load, moved aside.
- ``<version>/_PUBLISHED``: on an object store (``s3://``), written LAST when a version is uploaded;
  readers ignore versions without it, since buckets have no atomic rename (storage/object_store.py).
- ``network.onnx``: the ONNX twin of the version's network, when the exporter wrote one (its record
  is in the manifest's ``onnx`` key); ``network.onnx.json`` holds the record in the server's cache.
- Any other name (hidden files, ``README``) is ignored by the server.
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STAGING_PREFIX = ".staging-"
REJECTED_PREFIX = ".rejected-"
PUBLISHED_MARKER = "_PUBLISHED"
TWIN_FILE = "network.onnx"
TWIN_RECORD_FILE = "network.onnx.json"


#: Most digits of a version number: it travels as a signed 64-bit integer (int64 in the protos).
MAX_VERSION_DIGITS = 18


def parse_version(name: str) -> int | None:
    """``"12"`` -> 12; anything that is not a canonical positive integer -> None.

    ASCII digits only (``str.isdigit`` also accepts ``"²"``, which ``int`` refuses), at most
    :data:`MAX_VERSION_DIGITS` of them."""
    if not (name.isascii() and name.isdigit()) or len(name) > MAX_VERSION_DIGITS:
        return None
    if (len(name) > 1 and name.startswith("0")) or int(name) == 0:
        return None
    return int(name)
