"""Load annotation pickles (FineDiving) without running code from them.

`pickle.load` calls whatever global a file names, so a crafted annotation file can run any
command. `load_pickle` only resolves the globals needed for plain containers, numbers, strings
and numpy arrays/scalars; any other global is refused before it is imported or called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from fgar_cli.errors import FgarError
from fgar_cli.files import read_bytes

_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool", "complex"}

# Names numpy writes into pickles of arrays and scalars. numpy >= 2 writes `numpy._core.*`; older
# files say `numpy.core.*`. Both spellings resolve to the module this numpy actually has.
_NUMPY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}

# Protocol-2 pickles store bytes as `_codecs.encode(text, "latin1")`; numpy arrays need it there.
_OTHER = {("_codecs", "encode")}


def _numpy_names(module: str) -> tuple[str, str]:
    """(the `numpy.core` spelling used in the allow-list, the spelling this numpy imports)."""
    canonical = "numpy.core" + module[len("numpy._core") :] if module.startswith("numpy._core") else module
    import numpy as np

    if canonical.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
        return canonical, "numpy._core" + canonical[len("numpy.core") :]
    return canonical, canonical


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays in Python 2 pickles
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # Python 2 spelling
            module = "builtins"
        if module == "builtins" and name in _BUILTINS:
            return getattr(importlib.import_module("builtins"), name)
        canonical, installed = _numpy_names(module)
        if (canonical, name) in _NUMPY:
            return getattr(importlib.import_module(installed), name)
        if (module, name) in _OTHER:
            return getattr(importlib.import_module(module), name)
        raise FgarError(
            f"{self.source}: refusing to unpickle global '{module}.{name}' "
            "(annotation pickles may only hold containers, numbers, strings and numpy arrays)"
        )


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path` allowing only plain data; anything else is a one-line FgarError."""
    p = Path(path)
    with io.BytesIO(read_bytes(p, "annotation file")) as f:
        try:
            return _RestrictedUnpickler(f, p).load()
        except FgarError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            UnicodeDecodeError,
        ) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise FgarError(f"{p}: not a readable pickle ({first})") from None
