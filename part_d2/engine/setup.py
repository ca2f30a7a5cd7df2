"""Config setup shared by part_d2's command-line tools."""
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from part_d2.config import add_part_d2_config
from part_d2.data.part_json import register_config_part_jsons


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


def load_config(config_file: str = "", opts=()):
    """detectron2's default config + part_d2's keys, merged with a YAML file and KEY VALUE pairs;
    the part jsons of ``DATASETS.PART_JSONS`` are registered as datasets."""
    cfg = get_cfg()
    add_part_d2_config(cfg)
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:  # yacs: KeyError from files, AssertionError from lists
        where = f"{config_file} or its overrides" if config_file and opts else (config_file or "command-line overrides")
        raise ConfigError(f"{where}: {e.args[0] if e.args else e}") from None
    except FileNotFoundError as e:
        raise ConfigError(f"{config_file}: config file not found ({e})") from None
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
