"""Config setup shared by part_d2's command-line tools."""
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from part_d2.config import load_part_d2_config
from part_d2.data.shards import register_config_part_jsons
from part_d2.utils.errors import ConfigError  # noqa: F401  (re-exported for the tools)


def load_config(config_file: str = "", opts=()):
    """:func:`part_d2.config.load_part_d2_config`, then the part jsons of ``DATASETS.PART_JSONS``
    are registered as datasets."""
    cfg = load_part_d2_config(config_file, opts)
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
