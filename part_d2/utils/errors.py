"""The errors part_d2 reports to its user as one line ``error: <message>`` (see
:func:`part_d2.engine.launch.launch_tool`): each message names the file or key and the problem."""
import re

_ERROR_NAME = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): ")


def clean_error_message(text: str) -> str:
    """An error message as its user should read it, without a worker's traceback.

    PyTorch re-raises an error of a DataLoader worker with the worker's traceback as its message,
    and ``mp.spawn`` reports a child's error as a traceback. From such text this returns the
    message of its last line (``[module.]ErrorName: message`` without the name); a single line
    loses a leading error name; other text is returned unchanged.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or (len(lines) > 1 and not any("Traceback (most recent call last)" in line for line in lines)):
        return text
    return _ERROR_NAME.sub("", lines[-1].strip(), count=1)


class PartDatasetError(RuntimeError):
    """A dataset file is missing or malformed; the message names the file and the problem.

    Re-raised from a DataLoader worker, it keeps only that message (see :func:`clean_error_message`).
    """

    def __init__(self, message: str = ""):
        super().__init__(clean_error_message(message) if isinstance(message, str) else message)


class ImageReadError(RuntimeError):
    """An image file is missing, unreadable or inconsistent with its annotation record.

    Re-raised from a DataLoader worker, it keeps only its message (see :func:`clean_error_message`).
    """

    def __init__(self, message: str = ""):
        super().__init__(clean_error_message(message) if isinstance(message, str) else message)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


class MissingDependencyError(ImportError):
    """An optional dependency the user supplies (a source checkout, a package, a weights file) is
    missing; the message names it and how to get it. An ImportError, so tools report it as one line."""
