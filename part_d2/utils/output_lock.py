"""One process per output folder: an exclusive ``fcntl.flock`` on a lock file inside it.

The lock file stays (empty, never rewritten, so output trees and their modification times do not
change); the kernel releases the lock when its process ends, also on ``kill -9``.
"""
import contextlib
import fcntl
import logging
import os

logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class OutputLockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


@contextlib.contextmanager
def output_lock(folder: str, name: str = LOCK_FILE, wait: bool = False, option: str = "--output"):
    """Hold the lock ``folder/name`` for the duration of the block.

    Args:
        wait: wait for the other process instead of raising :class:`OutputLockedError`.
        option: how the user names the folder (shown in the message).
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise OutputLockedError(
                    f"{folder}: another process is writing this output folder (lock {path}); wait for it to "
                    f"finish, give another {option}, or pass --wait-for-lock") from None
            logger.warning(f"{folder}: another process is writing this output folder; waiting for it (lock {path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)
