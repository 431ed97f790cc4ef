"""Read a PyTorch checkpoint in the legacy (non-zip) format with numpy alone, no torch.

The format: five pickles in a row (magic number, protocol version, system info, the state dict whose tensors refer
to storages by key, the list of storage keys), then each storage in that order as an int64 element count and its
raw little-endian bytes.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8,
                  "BoolStorage": np.bool_}


class _Storage:
    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor waiting for its storage's bytes."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        assert self.storage.data is not None
        item = self.storage.dtype.itemsize
        base = self.storage.data[self.offset:]
        view = np.lib.stride_tricks.as_strided(base, self.size, tuple(s * item for s in self.stride))
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module.startswith("torch") and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", storage type, key, location, element count[, view metadata])
        _, dtype, key, _location, _count = pid[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(dtype)
        return self.storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format checkpoint as a numpy array, by its state-dict name."""
    storages: dict[str, _Storage] = {}
    with Path(path).open("rb") as handle:
        if pickle.load(handle) != MAGIC:
            raise ValueError(f"{path} is not a legacy-format PyTorch checkpoint")
        pickle.load(handle)
        pickle.load(handle)
        state = _Unpickler(handle, storages).load()
        keys = pickle.load(handle)
        for key in keys:
            (count,) = struct.unpack("<q", handle.read(8))
            storage = storages[key]
            raw = handle.read(count * storage.dtype.itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=count)
    return {name: value.array() for name, value in state.items() if isinstance(value, _TensorRef)}
