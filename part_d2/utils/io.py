"""json reading with file-naming errors, and atomic, deterministic file writes: the one way part_d2
writes its outputs.

A file that exists is complete: data goes to ``<path>.tmp<pid>`` next to the target, is flushed to
disk and renamed into place, so a killed job never leaves a truncated file under the final name
(:meth:`part_d2.data.shards.ShardStore.clear_partial` removes the temporary leftovers).
"""
import contextlib
import io
import json
import os

import numpy as np

from part_d2.utils.errors import PartDatasetError


def canonical_json(obj) -> bytes:
    """The one serialisation of a json object (sorted keys, no spaces): equal objects, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


@contextlib.contextmanager
def atomic_open(path: str):
    """``with atomic_open(path) as f``: a binary file written to ``<path>.tmp<pid>`` next to
    ``path``, flushed to disk and renamed into place when the block ends (removed on an error)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it into place."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path: str, obj) -> None:
    """Write ``obj`` as canonical json (see :func:`canonical_json`), atomically."""
    atomic_write_bytes(path, canonical_json(obj))


def atomic_write_npy(path: str, array: np.ndarray) -> None:
    """Save one array as ``.npy`` (deterministic bytes, unlike ``.npz`` whose zip entries carry times)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str):
    """Read a json file, raising :class:`PartDatasetError` naming the file on any problem."""
    if not os.path.isfile(path):
        raise PartDatasetError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PartDatasetError(f"{path}: malformed or truncated json ({e})") from None
    except UnicodeDecodeError as e:
        raise PartDatasetError(f"{path}: not a text json file ({e})") from None
