#!/usr/bin/env python
"""3x3 collages of the discovered parts of each object class (the paper's manual evaluation).

    python tools/pd_collages.py --input output/pd/ranked --output output/pd/collages [--per-class 9]

For every (object class, part class) of a finished stage output, up to ``--per-class`` instances
(highest scores first, then input order) are drawn on their object's crop and tiled into
``OUTPUT/<object class>/<part class>.png``.
"""
import argparse

from part_d2.engine.collages import make_collages
from part_d2.engine.config_checks import ConfigError
from part_d2.engine.launch import exit_on_user_error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="output directory of a finished stage")
    parser.add_argument("--output", required=True, help="directory of the collages")
    parser.add_argument("--per-class", type=int, default=9, help="instances per collage")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.per_class < 1:
            raise ConfigError(f"--per-class {args.per_class}: must be >= 1")
        written = make_collages(input=args.input, output=args.output, per_class=args.per_class)
    print(f"{written} collages written to {args.output}")
    return written


run = main  # the entry's former name


if __name__ == "__main__":
    main()
