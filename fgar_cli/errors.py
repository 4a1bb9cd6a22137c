"""One exception type for every user-facing failure.

Anything a user can cause (a bad file, a bad option, a missing class) raises `FgarError` with a
single line that names the file and what is wrong. The CLI prints it and exits 1: no traceback.
"""

from __future__ import annotations


class FgarError(Exception):
    """A user-facing error whose message is one line, naming the file and the problem."""
