"""Read the named arrays of a CTranslate2 model file (``model.bin``) with numpy alone.

Imports transferkit.core only. Layout (binary version 6, little-endian, as CTranslate2's ``model_spec.py`` writes it
and ``models/model.cc`` reads it): uint32 version; the spec name (a string: uint16 length counting a closing NUL,
then the bytes and the NUL); uint32 spec revision; uint32 variable count; per variable its name, uint8 rank, rank
uint32 dimensions, uint8 type id, uint32 byte count and the raw bytes; then uint32 alias count and (alias, target)
name pairs. Only version 6 is read; anything else, or a file that ends early, is a ``BackboneLoadError``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit.core.errors import BackboneLoadError

BINARY_VERSION = 6
# CTranslate2's DataType enum, in order: FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16 (bfloat16 is read as raw uint16)
DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                               4: np.dtype("<f2"), 5: np.dtype("<u2")}


@dataclass(frozen=True)
class CT2Model:
    """A CTranslate2 model file's spec name and revision, and its arrays by name (aliases resolved)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = memoryview(data), 0, where

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise BackboneLoadError(
                f"{self.where} is truncated: {what} needs {n} bytes at offset {self.pos}, but the file has "
                f"{len(self.data)} bytes; download or copy the model file again.")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.number("H", what)
        if length == 0:
            raise BackboneLoadError(f"{self.where}: invalid zero-length string ({what}) at offset {self.pos - 2}.")
        return bytes(self.take(length, what)[:-1]).decode("utf-8")


def read_ct2(path: str | Path) -> CT2Model:
    """Every array of the CTranslate2 file at ``path`` (copies, writable), keyed by name, aliases included."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BackboneLoadError(f"Cannot read the CTranslate2 model {where}: {exc.strerror or exc}.") from None
    reader = _Reader(data, where)
    version = reader.number("I", "the binary version")
    if version != BINARY_VERSION:
        raise BackboneLoadError(
            f"{where} is a CTranslate2 file of binary version {version}; transferkit reads version {BINARY_VERSION} "
            "(CTranslate2 >= 3.0). Convert the model again with a current ct2-transformers-converter.")
    spec = reader.string("the spec name")
    revision = reader.number("I", "the spec revision")
    variables = {}
    for _ in range(reader.number("I", "the variable count")):
        name, array = _variable(reader)
        variables[name] = array
    for _ in range(reader.number("I", "the alias count")):
        alias, target = reader.string("an alias"), reader.string("an alias target")
        if target not in variables:
            raise BackboneLoadError(f"{where}: alias '{alias}' points at '{target}', which the file does not hold.")
        variables[alias] = variables[target]
    if reader.pos != len(data):
        raise BackboneLoadError(f"{where}: {len(data) - reader.pos} unexpected bytes after the last alias.")
    return CT2Model(spec, revision, variables)


def _variable(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.string("a variable name")
    rank = reader.number("B", f"the rank of '{name}'")
    shape = tuple(reader.number("I", f"the shape of '{name}'") for _ in range(rank))
    type_id = reader.number("B", f"the type of '{name}'")
    if type_id not in DTYPES:
        raise BackboneLoadError(f"{reader.where}: variable '{name}' has unknown type id {type_id}.")
    dtype = DTYPES[type_id]
    n_bytes = reader.number("I", f"the size of '{name}'")
    if n_bytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise BackboneLoadError(f"{reader.where}: variable '{name}' of shape {shape} ({dtype}) has an invalid "
                                f"payload of {n_bytes} bytes.")
    array = np.frombuffer(reader.take(n_bytes, f"the values of '{name}'"), dtype=dtype).reshape(shape).copy()
    return name, array

