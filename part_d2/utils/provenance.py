"""Provenance of derived outputs: content hashes and fingerprints of what determines an output.

A *fingerprint* is the sha256 of the canonical json of its ingredients (input dataset, model
weights by content, seed, the relevant config values). Outputs store it; a rerun compares its own
fingerprint with the stored one and refuses to mix or reuse results of another run
(:func:`check_fingerprint`). Files are hashed by content, so a checkpoint retrained to the same
path gets a new fingerprint.
"""
import hashlib
import json
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from part_d2.utils.io import atomic_write_json, canonical_json

_HASH_CACHE: Dict[Tuple[str, int, int], str] = {}


class ProvenanceError(RuntimeError):
    """An output folder holds results of another run (another fingerprint), or a corrupt file."""


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (cached per path, size and mtime within the process)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def file_record(path: str) -> Dict:
    """``{"size": bytes, "sha256": hex}`` of a file, as stored in manifests."""
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def verify_file(path: str, record: Dict) -> Optional[str]:
    """None when ``path`` matches its manifest ``record`` (size, sha256), else what is wrong."""
    if not os.path.isfile(path):
        return "missing"
    size = os.path.getsize(path)
    if size != record.get("size"):
        return f"{size} bytes, the manifest says {record.get('size')}"
    if file_sha256(path) != record.get("sha256"):
        return "content differs from its sha256 in the manifest"
    return None


def weights_id(path: str) -> str:
    """Content id of model weights: ``sha256:<hex>`` of a local file, the path itself for a URL or
    a path that does not exist here, "" for none (random initialisation)."""
    if not path:
        return ""
    if os.path.isfile(path):
        return "sha256:" + file_sha256(path)
    return path


def records_id(records: Sequence[Dict]) -> str:
    """Content id of an input dataset (sha256 of its records' canonical json)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8"))
    return h.hexdigest()[:16]


def model_provenance(cfg, keys: Sequence[str] = ("MODEL", "INPUT")) -> Dict:
    """The config subtrees that determine a model's predictions, with ``MODEL.WEIGHTS`` by content
    (:func:`part_d2.utils.provenance.weights_id`) and without ``MODEL.DEVICE``."""
    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node.get(part) if node is not None else None
        if node is not None:
            out[key] = json.loads(json.dumps(node, default=str))
    if "MODEL" in out:
        out["MODEL"].pop("DEVICE", None)
        out["MODEL"]["WEIGHTS"] = weights_id(cfg.MODEL.WEIGHTS)
    return out


def fingerprint(**ingredients) -> str:
    """Hex sha256 (16 digits) of the canonical json of ``ingredients`` (json-serialisable values)."""
    return hashlib.sha256(canonical_json(ingredients)).hexdigest()[:16]


def check_fingerprint(where: str, stored: Optional[str], current: str, hint: str) -> None:
    """Raise :class:`ProvenanceError` when ``stored`` (None: no stored fingerprint) differs.

    Args:
        where: the file or folder named in the message; hint: what the user can do.
    """
    if stored is not None and stored != current:
        raise ProvenanceError(f"{where}: holds results of another run (fingerprint {stored}, this run {current}: "
                              f"other input, weights, seed or config); {hint}")


def cached_json(path: str, ingredients: Dict, compute: Callable[[], Any]) -> Any:
    """A json-serialisable result cached in ``path`` with the fingerprint of its ``ingredients``
    (e.g. weights by content, dataset, config overrides).

    Returns:
        The cached result when ``path`` holds this fingerprint, else ``compute()`` (then cached).
    Raises:
        ProvenanceError: ``path`` holds a result of other ingredients (or of unknown origin).
    """
    fp = fingerprint(**ingredients)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError:
                data = None
        stored = data.get("fingerprint", "(none)") if isinstance(data, dict) else "(unreadable)"
        check_fingerprint(path, stored, fp, "delete it to recompute")
        return data["result"]
    result = compute()
    atomic_write_json(path, {"fingerprint": fp, "ingredients": ingredients, "result": result})
    return result
