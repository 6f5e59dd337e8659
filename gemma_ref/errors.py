"""The one error type for bad input.

Everything that reads user-supplied files (configs, safetensors, tokenizers,
golden files) raises :class:`InputError` naming the file and the problem. The
CLI turns it into a one-paragraph message and exit code 2; library users can
catch it like any ``ValueError``.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input: a file that is missing, malformed or does not fit the model."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, hint: str | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        self.hint = hint
        text = f"{self.path}: {message}" if self.path else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)
