"""Output helpers of ``python -m client``: aligned tables and JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

__all__ = ["plain", "print_json", "table"]

_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """Columns padded to their widest cell; numeric columns right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(_NUMBER.fullmatch(str(row[i])) for row in rows if row[i] != "") for i in range(len(headers))
    ]
    for row in cells:
        padded = [
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric, strict=True)
        ]
        print("  ".join(padded).rstrip(), file=out)


def plain(value: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON values (enum names, ISO 8601 times)."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2)
    print(file=out)
