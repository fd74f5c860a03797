"""The one way the project reads a pickle: an exact (module, name) allow-list, nothing else.

Upstream LivePortrait ships its motion templates as pickles of numpy arrays, dicts, lists and numbers. A pickle
names any global it wants (`GLOBAL` / `STACK_GLOBAL`), and protocol 4 resolves dotted names attribute by
attribute (`numpy.dtypes` + `__builtins__.get` reaches `eval`). So every global is checked as an exact pair,
dotted names are refused before anything is imported, and persistent ids and extension codes are refused too.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys

from thermvision_db.errors import ThermVisionError

__all__ = ["UnsafePickleError", "SAFE_GLOBALS", "RestrictedUnpickler", "safe_pickle_load"]


class UnsafePickleError(ThermVisionError, pickle.UnpicklingError):
    """A pickle asked for something outside the numpy-array allow-list; nothing it named was called."""


def _numpy_dtype_classes() -> set[tuple[str, str]]:
    """numpy >= 1.25 can pickle dtypes by class (`numpy.dtypes.Float32DType`): the exact class names, no others."""
    names = ["BoolDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType", "Int32DType", "UInt32DType",
             "Int64DType", "UInt64DType", "LongDType", "ULongDType", "LongLongDType", "ULongLongDType",
             "ByteDType", "UByteDType", "ShortDType", "UShortDType", "IntDType", "UIntDType",
             "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
             "Complex64DType", "Complex128DType", "CLongDoubleDType",
             "BytesDType", "StrDType", "VoidDType", "ObjectDType", "DateTime64DType", "TimeDelta64DType"]
    return {("numpy.dtypes", n) for n in names}


# Exact (module, name) pairs: what numpy arrays and scalars (numpy 1.x and 2.x layouts), plain containers and
# Python-2-era byte strings need. Nothing here executes user-chosen code.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),
    ("collections", "OrderedDict"),
} | _numpy_dtype_classes())


# A global's name comes from the file (a link to a text file starting with "c" reads as GLOBAL "line1.line2"):
# shown only when it is a short dotted Python name of a standard-library or known package module.
PRINTABLE_GLOBAL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")
KNOWN_TOP_MODULES = frozenset(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "numpy", "torch", "collections"}


def _showable(module: str, name: str) -> bool:
    return bool(PRINTABLE_GLOBAL.fullmatch(f"{module}.{name}")) and module.split(".")[0] in KNOWN_TOP_MODULES


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the exact pairs in `SAFE_GLOBALS`; every other global is refused by name, unresolved."""

    def find_class(self, module: str, name: str):
        if "." in name or (module, name) not in SAFE_GLOBALS:
            shown = f"{module}.{name}" if _showable(module, name) else "(name not shown: it is not a known module's)"
            raise UnsafePickleError(f"refused global {shown}: only numpy arrays, dicts, lists and numbers "
                                    "are allowed")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refused persistent id: the file may not reference external objects")


def safe_pickle_load(data: bytes | io.BufferedIOBase | str | os.PathLike, source: str | None = None):
    """Unpickle with the allow-list. Any failure is an `UnsafePickleError` naming `source` (the file) and why."""
    if isinstance(data, (str, os.PathLike)):
        source = source or str(data)
        with open(data, "rb") as fh:
            data = fh.read()
    source = source or "<bytes>"
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(stream).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{source}: {err}") from None
    except Exception as err:  # truncated, corrupt, or an allowed constructor given bad arguments
        # only the exception's type: pickle's own messages quote bytes of the file ("invalid load key, '\\x..'")
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(err).__name__})") from None
