"""Snapshots of output directories, for byte-identity and no-rewrite assertions."""
import os
from typing import Dict


def file_tree(root: str, mtimes: bool = False) -> Dict[str, object]:
    """{path relative to ``root``: bytes} of every file under ``root``, or (bytes, mtime_ns) pairs
    with ``mtimes``."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                data = fh.read()
            out[os.path.relpath(p, root)] = (data, os.stat(p).st_mtime_ns) if mtimes else data
    return out
