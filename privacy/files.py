"""Files put in place whole, and readable by their owner only when they hold personal data.

Every file a reader may open while it is being made (a part, a worklist, a manifest, a
key) is written under a temporary name beside it and renamed when complete: a reader
sees the old file or the new one, never half of one, and a write that fails leaves
neither a torn file nor its temporary copy. A file of personal data (`private`) is
created owner-only (0600) before its first byte is written, so it is never readable by
others, not even for the moment between writing and a chmod. A file that must survive
a crash of the machine once written (`durable`: the audit log, keys) is synced to disk,
and so is its folder's entry for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_MODE = 0o600


@contextmanager
def written_whole(
    path: Path, private: bool = False, shared: bool = False, durable: bool = False
) -> Iterator[Path]:
    """A temporary path beside `path` to write to: renamed to `path` when the block ends,
    removed when it fails.

    `private`: the file is created owner-only before it is written. `durable`: the file
    and its folder are synced. `shared`: several writers (threads, retried bundles) may
    write `path` at once, so each gets a temporary name of its own. Otherwise the name is
    fixed, for paths that one writer at a time writes (the callers write each such path
    from one process, or under a lock): the leftover of a killed writer, which may hold
    personal data, is then written over by the next instead of lingering.
    """
    path = Path(path)
    suffix = f".{uuid.uuid4().hex}.tmp" if shared else ".tmp"
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        if private:
            tmp.unlink(missing_ok=True)  # a leftover keeps its mode through O_CREAT
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        yield tmp
        if private:  # in case the writer replaced the file rather than writing into it
            os.chmod(tmp, PRIVATE_MODE)
        if durable:
            _sync(tmp)
        os.replace(tmp, path)
        if durable:
            _sync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
