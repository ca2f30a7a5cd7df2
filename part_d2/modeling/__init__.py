"""part_d2 models; importing registers the meta-architectures and backbones."""
