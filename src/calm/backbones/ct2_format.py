"""The CTranslate2 model file format (``model.bin``), read without ctranslate2.

CTranslate2 ``model.bin``, binary version 6, little-endian::

    u32 version | str spec name | u32 revision | u32 variable count
    per variable: str name | u8 rank | rank x u32 shape | u8 dtype code | u32 byte count | bytes
    u32 alias count | per alias: str alias | str target
    (str = u16 byte count + UTF-8 bytes ending in NUL)

dtype codes: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Whisper's variables are float16 weights
plus a few scalars (``*/num_heads``, ``decoder/activation`` ...); attention projections are fused
(self-attention ``linear_0`` = q,k,v stacked; cross-attention ``linear_1`` = k,v stacked) and the
output projection is an alias of the token embedding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import torch

from calm.errors import InputError

_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
_BINARY_VERSION = 6


class Ct2FormatError(InputError):
    """A CTranslate2 model file that is truncated, of another version, or not a Whisper model."""


class _Chain:
    """Reads the concatenation of several files as one stream, without joining them on disk."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._index = 0
        self._handle: BinaryIO | None = open(self.paths[0], "rb")
        self.offset = 0

    def readinto(self, buffer: memoryview) -> None:
        """Fill ``buffer`` completely, crossing file boundaries; EOF before that is a Ct2FormatError."""
        filled = 0
        while filled < len(buffer):
            if self._handle is None:
                raise Ct2FormatError(f"{self.describe()}: truncated at byte {self.offset + filled}")
            got = self._handle.readinto(buffer[filled:])
            if got:
                filled += got
                continue
            self._handle.close()
            self._index += 1
            self._handle = open(self.paths[self._index], "rb") if self._index < len(self.paths) else None
        self.offset += filled

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        self.readinto(memoryview(buffer))
        return bytes(buffer)

    def at_end(self) -> bool:
        while self._handle is not None:
            if self._handle.read(1):
                return False
            self._handle.close()
            self._index += 1
            self._handle = open(self.paths[self._index], "rb") if self._index < len(self.paths) else None
        return True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def describe(self) -> str:
        return " + ".join(str(p) for p in self.paths)

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (size,) = self.unpack("H")
        return self.read(size).rstrip(b"\0").decode("utf-8")


@dataclass
class Ct2Model:
    """The contents of a CTranslate2 model.bin: spec name, revision, variables and aliases."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """The variable an alias points to (or ``name`` itself)."""
        return self.aliases.get(name, name)

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.variables[self.resolve(name)]
        except KeyError:
            raise KeyError(f"CTranslate2 {self.spec}: no variable {name!r}") from None

    def scalar(self, name: str) -> int | float:
        """The value of a rank-0 variable such as ``encoder/num_heads``."""
        return self[name].item()


def read_ct2(paths: Path | str | Sequence[Path | str]) -> Ct2Model:
    """Read a CTranslate2 model.bin (binary version 6), given as one path or as its parts in order.

    Each variable's bytes are read straight into the tensor that holds it: the parts are streamed,
    never joined or held twice.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CTranslate2 model file not found")
    stream = _Chain(paths)
    try:
        (version,) = stream.unpack("I")
        if version != _BINARY_VERSION:
            raise Ct2FormatError(
                f"{stream.describe()}: CTranslate2 binary version {version}; this reader knows {_BINARY_VERSION}"
            )
        spec = stream.string()
        (revision,) = stream.unpack("I")
        (count,) = stream.unpack("I")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(count):
            name = stream.string()
            (rank,) = stream.unpack("B")
            shape = stream.unpack(f"{rank}I") if rank else ()
            code, nbytes = stream.unpack("BI")
            dtype = _DTYPES.get(code)
            if dtype is None:
                raise Ct2FormatError(f"{stream.describe()}: variable {name!r} has unknown dtype code {code}")
            expected = dtype.itemsize * int(torch.Size(shape).numel())
            if nbytes != expected:
                raise Ct2FormatError(
                    f"{stream.describe()}: variable {name!r} has {nbytes} bytes, shape {list(shape)} needs {expected}"
                )
            data = bytearray(nbytes)
            stream.readinto(memoryview(data))
            variables[name] = torch.frombuffer(data, dtype=dtype).reshape(shape) if nbytes else torch.empty(shape, dtype=dtype)
        (n_aliases,) = stream.unpack("I")
        aliases = {}
        for _ in range(n_aliases):
            alias = stream.string()
            aliases[alias] = stream.string()
        if not stream.at_end():
            raise Ct2FormatError(f"{stream.describe()}: unexpected bytes after the aliases at byte {stream.offset}")
    except struct.error as error:
        raise Ct2FormatError(f"{stream.describe()}: malformed header near byte {stream.offset}: {error}") from None
    finally:
        stream.close()
    for alias, target in aliases.items():
        if target not in variables:
            raise Ct2FormatError(f"{stream.describe()}: alias {alias!r} points to missing variable {target!r}")
    return Ct2Model(spec, revision, variables, aliases)


# ---------------------------------------------------------------------------- converter
