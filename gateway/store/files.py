"""Files the gateway writes that hold money and usage: for the user it runs as, only.

Rules: a folder the gateway creates is 0700; a file it creates is 0600, from the moment it
exists (never created wider, then narrowed). A file that already exists with wider modes
(made by an older version) is narrowed when it is opened. Folders that already exist are
the operator's: left as they are.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700 if it does not exist yet."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read or write it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    mode = path.stat()
    if mode.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and mode.st_uid == os.getuid():
        path.chmod(0o600)
