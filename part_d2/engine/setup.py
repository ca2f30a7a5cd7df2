"""Config setup shared by part_d2's command-line tools."""
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from part_d2.config import load_part_d2_config
from part_d2.data.shards import register_config_part_jsons
from part_d2.engine.config_checks import ConfigError, check_config_file, split_opts, validate_config

__all__ = ["ConfigError", "load_config", "setup", "setup_logging"]


def load_config(config_file: str = "", opts=(), validate: bool = True):
    """:func:`part_d2.config.load_part_d2_config` after checking the YAML chain and the overrides;
    the part jsons of ``DATASETS.PART_JSONS`` are registered as datasets.

    Raises:
        ConfigError: naming the file or key: a missing file, YAML syntax error, ``_BASE_`` cycle,
            unknown key, value of the wrong type, or (``validate``) an out-of-range value
            (:func:`part_d2.engine.config_checks.validate_config`).
    """
    if config_file:
        check_config_file(config_file)
    split_opts(opts)
    cfg = load_part_d2_config(config_file, opts)
    if validate:
        validate_config(cfg)
    register_config_part_jsons(cfg)
    return cfg


def setup(args):
    """Config from ``args.config_file``/``args.opts``, frozen, with detectron2's default setup."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logging(cfg)
    return cfg


def setup_logging(cfg) -> None:
    """Show part_d2's messages (skips with counts, progress, resume) on the console and in
    ``OUTPUT_DIR/log.txt``, like detectron2's own."""
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="part_d2", abbrev_name="pd2")
