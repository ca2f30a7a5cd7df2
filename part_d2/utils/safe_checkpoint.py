"""Crash-safe saving and verified resuming for fvcore/detectron2 checkpointers (v0.6 and main).

:class:`SafeCheckpointMixin` changes three things of ``fvcore.common.checkpoint.Checkpointer``:

* ``save`` writes ``<name>.pth.tmp<pid>`` next to the target, fsyncs it and renames it into place;
  ``last_checkpoint`` is rewritten the same way, only after the rename. A kill at any moment leaves
  the previous checkpoint and ``last_checkpoint`` intact (a restarted run that saves the same name
  again never truncates the good file).
* ``resume_or_load(..., resume=True)`` verifies the checkpoint ``last_checkpoint`` names (it must
  load); an empty, dangling or unreadable one falls back, with a warning, to the newest readable
  ``*.pth`` of the folder; when none is readable it raises :class:`CheckpointError`.
* ``load`` of a missing, truncated or non-checkpoint file raises :class:`CheckpointError` naming
  the file (instead of an assertion or a ``PytorchStreamReader`` traceback).
"""
import functools
import glob
import logging
import os
import pickle
import zipfile
from typing import List, Optional

import torch

from part_d2.utils.io import atomic_open, atomic_write_bytes

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"
# what torch.load / pickle raise on a truncated or foreign file
_READ_ERRORS = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
                AttributeError, ImportError, IndexError, KeyError, TypeError)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or not a checkpoint; the message names the file."""


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text.split(". ")[0][:160] if text else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _reporting_read_errors(load_file):
    """Wrap a checkpointer's ``_load_file``: a file that does not load raises :class:`CheckpointError`."""

    @functools.wraps(load_file)
    def wrapped(self, filename: str):
        try:
            loaded = load_file(self, filename)
        except CheckpointError:
            raise
        except _READ_ERRORS as e:
            raise CheckpointError(f"{filename}: not a readable checkpoint, truncated or another kind of file "
                                  f"({_first_sentence(e)})") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("model", {}), dict):
            raise CheckpointError(f"{filename}: not a checkpoint (no state dict in it)")
        return loaded

    return wrapped


class SafeCheckpointMixin:
    """Mix in before ``DetectionCheckpointer``/``Checkpointer``: atomic saves, verified resume."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must not contain a folder")
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)
        for stale in glob.glob(glob.escape(save_file) + ".tmp*"):
            os.remove(stale)  # left by a killed save of the same name
        with atomic_open(save_file) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, LAST_CHECKPOINT), last_filename_basename.encode("utf-8"))

    def load(self, path: str, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise CheckpointError(f"{path}: checkpoint file not found")
        return super().load(path, *args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        """A subclass's own ``_load_file`` (e.g. part_d2's weights_only loading) also reports an
        unreadable file as :class:`CheckpointError`."""
        super().__init_subclass__(**kwargs)
        if "_load_file" in cls.__dict__:
            cls._load_file = _reporting_read_errors(cls.__dict__["_load_file"])

    @_reporting_read_errors
    def _load_file(self, filename: str):
        return super()._load_file(filename)

    def _readable(self, path: str) -> Optional[str]:
        """None when ``path`` loads as a checkpoint, else the reason."""
        if not os.path.isfile(path):
            return "file not found"
        try:
            self._load_file(path)
        except CheckpointError as e:
            return str(e)
        return None

    def _candidates(self) -> List[str]:
        """The folder's ``*.pth`` files, newest first (modification time, then name)."""
        files = glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth"))
        return sorted(files, key=lambda p: (os.path.getmtime(p), p), reverse=True)

    def verified_checkpoint_file(self) -> str:
        """The checkpoint to resume from: the one ``last_checkpoint`` names when it loads, else the
        newest readable ``*.pth`` (with a warning); "" when the folder has no ``last_checkpoint``.

        Raises:
            CheckpointError: ``last_checkpoint`` exists but no checkpoint of the folder is readable.
        """
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(tag):
            return ""
        with open(tag, "rb") as f:
            name = f.read().decode("utf-8", "replace").strip()
        named = os.path.join(self.save_dir, name) if name else ""
        problem = "is empty" if not name else None
        if named:
            reason = self._readable(named)
            if reason is None:
                return named
            problem = f"names {name}, which is not readable" + ("" if reason.startswith(named) else f" ({reason})")
        for path in self._candidates():
            if path != named and self._readable(path) is None:
                logger.warning(f"{tag} {problem}; resuming from the newest readable checkpoint {path} instead")
                return path
        raise CheckpointError(f"{tag} {problem}, and {self.save_dir} holds no other readable checkpoint; "
                              f"delete {tag} to start from MODEL.WEIGHTS")

    def has_checkpoint(self) -> bool:
        return bool(self._resume_file())

    def get_checkpoint_file(self) -> str:
        return self._resume_file()

    def _resume_file(self) -> str:
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        key = (os.path.getmtime(tag), os.path.getsize(tag)) if os.path.isfile(tag) else None
        cached = getattr(self, "_verified", None)
        if cached is None or cached[0] != key:
            self._verified = (key, self.verified_checkpoint_file())
        return self._verified[1]


def verify_weights_file(path: str) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when it is a local file that a detectron2
    checkpointer cannot read (missing, truncated, or not a checkpoint). For weights that
    detectron2 loads itself (``DefaultPredictor``), which would otherwise end in a traceback.
    Empty paths and URLs (``detectron2://``, ``https://``) are left to detectron2."""
    if not path or "://" in path:
        return
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                loaded = pickle.load(f, encoding="latin1")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
    except _READ_ERRORS as e:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or another kind of file "
                              f"({_first_sentence(e)})") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: not a checkpoint (no state dict in it)")
