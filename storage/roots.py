"""A model root is a local directory or an object store URL (``s3://bucket/prefix``); telling them apart.

Kept free of heavy imports: the server's settings parse model roots with it (fsspec only when asked).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def is_url(root: Any) -> bool:
    """``s3://bucket/prefix`` and the like; a local directory (``Path`` or plain path) is not."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def as_root(raw: str | os.PathLike) -> Path | str:
    """A model root as given by a user: a URL stays a string (``Path`` would fold ``//``), else a Path."""
    text = os.fspath(raw)
    return text.rstrip("/") if is_url(text) else Path(text)


def join(root: Path | str, *parts: str) -> Path | str:
    """``root/part/...`` for a local directory or a URL."""
    if is_url(root):
        return "/".join([root.rstrip("/"), *parts])
    return Path(root).joinpath(*parts)


def storage_problem(url: str) -> str | None:
    """Why ``url`` cannot be read here (its scheme unknown, its library not installed), or None."""
    scheme = url.split("://", 1)[0]
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        hints = {"s3": "pip install 'imageserve[s3]'", "gs": "pip install gcsfs", "gcs": "pip install gcsfs"}
        hint = hints.get(scheme, "install its fsspec implementation")
        return f"{url}: {scheme}:// needs a library that is not installed ({hint}): {exc}"
    except ValueError:
        return f"{url}: fsspec knows no {scheme}:// storage (s3://, gs://, az://, ... are known)"
    return None


def absolute(root: Path | str) -> str:
    """The root as a string another process (a training worker) can use: a URL as is, a directory absolute."""
    return root if is_url(root) else str(Path(root).resolve())
