"""``PartCheckpointer``: detectron2's checkpointer plus what part_d2's models need.

* detectron2 model-zoo ``.pkl`` files (legacy pickle; a warning says that unpickling runs code)
  and ``.pth`` files read with ``torch.load(weights_only=True)`` when their content allows;
* a pretrained 3-channel input conv (ResNet ``stem.conv1``, Swin ``patch_embed.proj``) loaded
  into a 4-channel object-aware model according to ``INPUT.OBJECT_MASK.INIT``;
* a summary of the entries skipped for shape (e.g. an 80-class head loaded into a class-agnostic
  model) and an error when a checkpoint shares no weight with the model;
* PartDistillation's stage-3 class head in either layout (:func:`load_part_classifier`): part_d2's
  ``part_classifier.{weight,bias}`` (N_obj * P rows, float32) + ``part_classifier.no_object.*``,
  or the reference's single ``sem_seg_head.predictor.class_embed`` of N_obj * P + 1 float64 rows
  with the shared no-object row last (``part_distillation_transformer_decoder.py``).
  :func:`to_reference_layout` writes the other direction (``tools/convert_pd_checkpoint.py``).
* atomic saves (temp file, fsync, rename, then ``last_checkpoint``) and a ``--resume`` that falls
  back to the newest readable checkpoint (:mod:`part_d2.utils.safe_checkpoint`).

Usage::

    PartCheckpointer(model, cfg.OUTPUT_DIR, init=cfg.INPUT.OBJECT_MASK.INIT, trainer=trainer)
    PartCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, trainer=trainer)
"""
import logging
import pickle
from typing import Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from part_d2.modeling.backbone.input_channels import INIT_MODES, widen_input_weight
from part_d2.utils.safe_checkpoint import SafeCheckpointMixin

logger = logging.getLogger(__name__)

INPUT_CONV_SUFFIXES = ("stem.conv1.weight", "patch_embed.proj.weight")


REFERENCE_CLASS_EMBED = "sem_seg_head.predictor.class_embed"
PART_CLASSIFIER = "part_classifier"


class CheckpointMismatchError(RuntimeError):
    """The checkpoint has no weight that fits the model (wrong architecture or wrong file)."""


def _shape(state: Dict[str, torch.Tensor], key: str) -> str:
    return str(tuple(state[key].shape)) if key in state else "missing"


def load_part_classifier(state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor]
                         ) -> Dict[str, torch.Tensor]:
    """The checkpoint ``state`` with its per-object part classifier in part_d2's layout.

    Models without ``part_classifier.weight`` get ``state`` unchanged. Otherwise (N = N_obj * P
    rows of width C):

    * part_d2 keys ``part_classifier.*`` must all be present with the model's shapes;
    * else a reference ``sem_seg_head.predictor.class_embed`` of (N + 1, C) (+ (N + 1,) bias) is
      split: rows ``[:N]`` -> ``part_classifier.{weight,bias}``, row ``N`` (no object) ->
      ``part_classifier.no_object.*``, cast to the model's dtype (the reference stores float64);
    * else a class-agnostic ``class_embed`` of 2 rows (the stage-1b proposal model, from which
      stage 3 starts) keeps the model's fresh classifier, with a warning;
    * anything else raises :class:`CheckpointMismatchError` naming the key and the shapes.
    """
    key = f"{PART_CLASSIFIER}.weight"
    if key not in model_state:
        return state
    expected = {k: v for k, v in model_state.items() if k.startswith(f"{PART_CLASSIFIER}.")}
    rows, dim = model_state[key].shape
    if any(k.startswith(f"{PART_CLASSIFIER}.") for k in state):
        bad = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
        if bad:
            raise CheckpointMismatchError(
                f"{bad[0]}: checkpoint has {_shape(state, bad[0])}, the model needs {tuple(expected[bad[0]].shape)} "
                "(PART_DISTILLATION.NUM_OBJECT_CLASSES x NUM_PART_MODES rows)")
        return state
    ref_w, ref_b = f"{REFERENCE_CLASS_EMBED}.weight", f"{REFERENCE_CLASS_EMBED}.bias"
    if ref_w in state and tuple(state[ref_w].shape) == (rows + 1, dim) and _shape(state, ref_b) == str((rows + 1,)):
        stored, dtype = state[ref_w].dtype, model_state[key].dtype
        state = from_reference_layout(state, dtype)
        logger.info("%s (%d x %d, %s): reference-layout class head split into part_classifier.* (%s)",
                    ref_w, rows + 1, dim, stored, dtype)
        return state
    if ref_w in state and state[ref_w].shape[0] == 2:
        logger.warning("the checkpoint has a class-agnostic head (%s %s): the per-object part classifier "
                       "starts from its random initialisation (stage 3 from the proposal model)",
                       ref_w, tuple(state[ref_w].shape))
        return state
    raise CheckpointMismatchError(
        f"{ref_w}: checkpoint has {_shape(state, ref_w)}, the per-object model needs ({rows + 1}, {dim}) "
        f"(N_obj x P + 1 no-object row) or part_classifier.weight ({rows}, {dim}); "
        "check PART_DISTILLATION.NUM_OBJECT_CLASSES / NUM_PART_MODES and MODEL.WEIGHTS")


def from_reference_layout(state: Dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
                          ) -> Dict[str, torch.Tensor]:
    """The reference's ``class_embed`` ((N + 1, C) weight, (N + 1,) bias) as part_d2's
    ``part_classifier.*`` in ``dtype`` (last row: no object); other entries unchanged."""
    ref_w, ref_b = f"{REFERENCE_CLASS_EMBED}.weight", f"{REFERENCE_CLASS_EMBED}.bias"
    if ref_w not in state or ref_b not in state or state[ref_w].dim() != 2 or len(state[ref_w]) < 2:
        raise CheckpointMismatchError(f"{ref_w}: checkpoint has {_shape(state, ref_w)}, expected (N_obj x P + 1, C)")
    weight, bias = state[ref_w], state[ref_b]
    out = {k: v for k, v in state.items() if k not in (ref_w, ref_b)}
    out[f"{PART_CLASSIFIER}.weight"] = weight[:-1].to(dtype)
    out[f"{PART_CLASSIFIER}.bias"] = bias[:-1].to(dtype)
    out[f"{PART_CLASSIFIER}.no_object.weight"] = weight[-1:].to(dtype)
    out[f"{PART_CLASSIFIER}.no_object.bias"] = bias[-1:].to(dtype)
    return out


def to_reference_layout(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """part_d2's ``part_classifier.*`` as the reference's float64 ``class_embed`` (N + 1 rows,
    no-object row last); other entries unchanged. Inverse of :func:`load_part_classifier` up to the
    float64 -> float32 cast."""
    names = ["weight", "bias", "no_object.weight", "no_object.bias"]
    keys = [f"{PART_CLASSIFIER}.{n}" for n in names]
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointMismatchError(f"{missing[0]}: missing; not a per-object (stage-3) part_d2 checkpoint")
    out = {k: v for k, v in state.items() if k not in keys}
    w, b, nw, nb = (state[k] for k in keys)
    out[f"{REFERENCE_CLASS_EMBED}.weight"] = torch.cat([w, nw]).to(torch.float64)
    out[f"{REFERENCE_CLASS_EMBED}.bias"] = torch.cat([b, nb]).to(torch.float64)
    return out


def _strip_module_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix of (Distributed)DataParallel checkpoints."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _examples(keys: List[str], limit: int = 10) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


class PartCheckpointer(SafeCheckpointMixin, DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with input-channel widening and clearer load reports; crash-safe
    saves and a verified ``--resume`` (see :class:`part_d2.utils.safe_checkpoint.SafeCheckpointMixin`)."""

    def __init__(self, model, save_dir: str = "", *, init: str = "zero", save_to_disk=None, **checkpointables):
        """
        Args:
            model: the model (or a DistributedDataParallel wrapping it).
            save_dir: where :meth:`save` writes.
            init: ``INPUT.OBJECT_MASK.INIT``, how a 3-channel pretrained input conv fills a wider
                model conv: "zero", "mean" or "random" (see :func:`widen_input_weight`).
            checkpointables: other objects with ``state_dict`` (optimizer, scheduler, trainer...).
        """
        if init not in INIT_MODES:
            raise ValueError(f"INPUT.OBJECT_MASK.INIT must be one of {INIT_MODES}, got {init!r}")
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.init = init

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", **checkpointables) -> "PartCheckpointer":
        """A checkpointer using ``cfg.INPUT.OBJECT_MASK.INIT``."""
        return cls(model, save_dir, init=cfg.INPUT.OBJECT_MASK.INIT, **checkpointables)

    def _load_file(self, filename: str):
        if filename.endswith(".pkl"):
            logger.warning(
                "Loading %s with pickle: unpickling can execute arbitrary code, load only trusted files",
                filename,
            )
            return super()._load_file(filename)
        if filename.endswith(".pyth"):
            return super()._load_file(filename)
        loaded = self._torch_load(filename)
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _torch_load(self, filename: str):
        """``torch.load`` with ``weights_only=True``, or full unpickling (with a warning) for files
        that store other Python objects."""
        with self.path_manager.open(filename, "rb") as f:
            try:
                return torch.load(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                logger.warning(
                    "%s holds Python objects that weights_only loading refuses (%s); loading it with "
                    "full unpickling, which can execute code: load only trusted files",
                    filename, str(e).splitlines()[0],
                )
                f.seek(0)
                return torch.load(f, map_location="cpu", weights_only=False)

    def _input_conv_keys(self, model_state: Dict[str, torch.Tensor]) -> List[str]:
        """Model keys of input convolutions that take more than 3 channels."""
        return [
            k for k, v in model_state.items()
            if k.endswith(INPUT_CONV_SUFFIXES) and v.dim() == 4 and v.shape[1] > 3
        ]

    def _widen_input_convs(self, state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor]):
        """Replace narrower pretrained input-conv weights in ``state`` (in place) per :attr:`init`."""
        for key in self._input_conv_keys(model_state):
            weight, target = state.get(key), model_state[key]
            if weight is None or weight.dim() != 4 or weight.shape[1] >= target.shape[1]:
                continue
            if (weight.shape[0],) + tuple(weight.shape[2:]) != (target.shape[0],) + tuple(target.shape[2:]):
                continue
            if self.init == "random":
                del state[key]
                logger.info("%s: %d-channel checkpoint weight dropped, the %d-channel conv keeps its random "
                            "init (INPUT.OBJECT_MASK.INIT=random)", key, weight.shape[1], target.shape[1])
                continue
            state[key] = widen_input_weight(weight, target.shape[1], self.init).to(target.dtype)
            logger.info("%s: %d-channel checkpoint weight widened to %d channels (INPUT.OBJECT_MASK.INIT=%s)",
                        key, weight.shape[1], target.shape[1], self.init)

    def _check_overlap(self, state: Dict[str, torch.Tensor], model_state: Dict[str, torch.Tensor]):
        """Raise if nothing in ``state`` fits the model; warn if most of it does not."""
        fits = [k for k, v in state.items() if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)]
        unknown = [k for k in state if k not in model_state]
        wrong_shape = [k for k in state if k in model_state and k not in fits]
        if state and not fits:
            raise CheckpointMismatchError(
                f"no checkpoint entry fits the model {type(self.model).__name__}: is it the checkpoint of "
                f"another architecture? Checkpoint keys not in the model: {_examples(unknown)}; keys with "
                f"another shape: {_examples(wrong_shape)}; model keys: {_examples(list(model_state))}"
            )
        if wrong_shape:
            logger.warning(
                "%d checkpoint entries skipped for shape (e.g. a class head trained with another number "
                "of classes): %s", len(wrong_shape), _examples(wrong_shape),
            )
        if len(fits) < len(state) / 2:
            logger.warning(
                "only %d of %d checkpoint entries fit the model; unmatched: %s",
                len(fits), len(state), _examples(unknown + wrong_shape),
            )

    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        state = _strip_module_prefix(state)
        model_state = self.model.state_dict()
        if checkpoint.pop("matching_heuristics", False):
            narrow_view = dict(model_state)
            for key in self._input_conv_keys(model_state):
                narrow_view[key] = model_state[key][:, :3]
            state = align_and_update_state_dicts(
                narrow_view, state, c2_conversion=checkpoint.get("__author__", None) == "Caffe2"
            )
        self._widen_input_convs(state, model_state)
        state = load_part_classifier(state, model_state)
        self._check_overlap(state, model_state)
        checkpoint["model"] = state
        return super()._load_model(checkpoint)
