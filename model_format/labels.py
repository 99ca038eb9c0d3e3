"""A version's labels file (``assets/labels.txt``): one class name per line, index = output position.

Pure text in and out; the caller reads and writes the file.
"""

from __future__ import annotations

from collections.abc import Sequence


def parse_labels(text: str) -> list[str]:
    """The class names of a labels file's text."""
    return [line.rstrip("\r") for line in text.splitlines()]


def format_labels(labels: Sequence[str]) -> str:
    """A labels file's text; a label holding a line break cannot be written (ValueError)."""
    for label in labels:
        if "\n" in label or "\r" in label:
            raise ValueError(f"label {label!r} contains a line break")
    return "".join(f"{label}\n" for label in labels)
