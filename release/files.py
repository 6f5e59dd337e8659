"""Writing files so that nothing is ever half-written: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, what: str | None = None) -> Iterator[Path]:
    """A temporary path in `path`'s directory to write; renamed onto `path` if the block succeeds, removed if not.

    An existing file's permissions carry over; a new file gets 0644. A symlink is
    followed: its target is replaced (atomically, in the target's directory) and the
    link stays a link. The temporary name is unique (mkstemp) and removed on any
    failure. A target that is a directory or another non-regular file, a read-only
    or full disk: one InputError naming the file, nothing left behind.
    """
    from release.errors import InputError

    what = f"{what}: " if what else ""
    path = Path(path)
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            raise InputError(f"{what}is a symlink to {target}, which does not exist; refused", path)
        path = target
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise InputError(f"{what}is {kind}; cannot write a file there", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"{what}cannot write ({e.strerror or e})", path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{what}cannot write ({e.strerror or e}); nothing was changed", path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, text: str, what: str | None = None) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, what) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None,
                      what: str | None = None) -> None:
    """Write a safetensors file atomically (see :func:`atomic_path`).

    safetensors reports a failed write (a full disk, an I/O error, a file-size limit) as its own
    ``SafetensorError`` with the OS error inside its text, not as ``OSError``; it becomes the same
    "cannot write" error any other write gives, naming the file.
    """
    import re

    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    with atomic_path(path, what) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            io = re.search(r"(?:I/O error|IoError)\W*(.+)", str(e))  # "... I/O error: No space left on device (os error 28)"
            if io is None:
                raise  # not the disk: a bug in what we asked it to write
            raise OSError(io.group(1).strip()) from None


def require_regular(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """``stat`` of `path` when it is a regular file (symlinks followed); InputError naming it otherwise.

    For files a library opens itself (safetensors, GGUF): a FIFO would block the open
    until a writer appears, a device would be read forever.
    """
    import stat

    from release.errors import InputError

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{what}: no such file", p) from None
    except OSError as e:
        raise InputError(f"{what}: cannot read ({e.strerror or e})", p) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what}: is a directory, not a file", p)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what}: not a regular file (a FIFO, socket or device); refused", p)
    return st


MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "model.safetensors.index.json", "*.safetensors",
                       "tokenizer.model", "tokenizer.json", "tokenizer_config.json")


def check_model_files(model_dir: str | os.PathLike) -> None:
    """Refuse a model directory whose config, index, safetensors or tokenizer entries are not regular files.

    Runs before gemma_ref's readers, which open these files themselves (and would block on a FIFO).
    """
    d = Path(model_dir)
    if not d.is_dir():
        return  # the readers say what is wrong with a missing directory
    for pattern in MODEL_FILE_PATTERNS:
        for p in sorted(d.glob(pattern)):
            if p.exists() or p.is_symlink():
                require_regular(p, "model file")


def read_regular_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes`; InputError for anything else.

    A FIFO, device or directory where a file is expected is refused without opening it
    (opening a FIFO blocks until a writer appears); the size is checked before reading.
    """
    from release.errors import InputError

    p = Path(path)
    st = require_regular(p, what)
    if st.st_size > max_bytes:
        raise InputError(f"{what}: {st.st_size} bytes, more than the limit of {max_bytes}", p)
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"{what}: cannot read ({e.strerror or e})", p) from None
    if len(data) > max_bytes:
        raise InputError(f"{what}: more than the limit of {max_bytes} bytes", p)
    return data


def read_text_file(path: str | os.PathLike, max_bytes: int, what: str = "file") -> str:
    """UTF-8 text of a regular file of at most `max_bytes` (a leading BOM dropped); InputError otherwise."""
    from release.errors import InputError

    data = read_regular_bytes(path, max_bytes, what)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise InputError(f"{what}: not UTF-8 text (byte {e.start} cannot be decoded)", path) from None
