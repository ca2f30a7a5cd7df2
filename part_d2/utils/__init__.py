"""Pure helpers with no detectron2 model dependencies: atomic file output, visualization."""
