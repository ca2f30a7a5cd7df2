#!/usr/bin/env python
"""An interactive web page for part segmentation: upload an image, see the detected objects, choose
one (click it, draw a box or brush a mask), choose the part source and options, see its parts with
names and scores, download the overlay and the json. Runs on CPU.

    python tools/web_demo.py --config-file CFG [--host 127.0.0.1] [--port 8080] MODEL.WEIGHTS model.pth

then open http://127.0.0.1:8080/ in a browser. ``KEY VALUE`` config overrides come last
(``SEGMENTER.*`` picks the object and part sources and the options' defaults).
"""
import argparse
import logging

from detectron2.utils.env import seed_all_rng

import part_d2  # noqa: F401
from part_d2.engine.config_checks import ConfigError
from part_d2.engine.launch import exit_on_user_error
from part_d2.engine.setup import load_config
from part_d2.engine.web_app import SegmenterBackend, create_app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--random-weights", action="store_true",
                        help="allow an empty MODEL.WEIGHTS (a randomly initialised model, for testing only; "
                             "SEED >= 0 makes it the same model every time)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s")
    with exit_on_user_error():
        app = build_app(args)
    logging.getLogger("part_d2.web_demo").info(f"open http://{args.host}:{args.port}/ in a browser")
    app.run(host=args.host, port=args.port, threaded=True)


def build_app(args):
    """The Flask app for ``args``; the default part source's models are loaded (SEED >= 0 seeds
    their random initialisation)."""
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: not a port number (1-65535)")
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED)
    backend = SegmenterBackend(cfg, random_weights=args.random_weights)
    backend.segmenter()  # the default part source's models, loaded before the first request
    return create_app(backend)


if __name__ == "__main__":
    main()
