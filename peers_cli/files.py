"""Writing the user's configuration files without ever leaving one half-written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: Path, text: str, mode: int, dir_mode: int = 0o700) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, rename it over.

    Raises ``OSError``; the temporary file is removed on any failure.
    """
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
