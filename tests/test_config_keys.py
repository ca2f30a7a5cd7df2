"""No dead config keys: every key ``add_part_d2_config`` defines is read somewhere in ``part_d2/``
(outside config.py), except the keys that exist only so that official YAML files load
(``OFFICIAL_YAML_ONLY_KEYS``, one list), and setting one of those to a value part_d2 does not
implement is a warning naming the key."""
import ast
import logging
import os
import re

from detectron2.config import CfgNode, get_cfg

from part_d2.config import OFFICIAL_YAML_ONLY_KEYS, add_part_d2_config, load_part_d2_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "part_d2")


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, CfgNode):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def added_keys():
    return sorted(set(_flat(add_part_d2_config(get_cfg()))) - set(_flat(get_cfg())))


def _sources():
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            path = os.path.join(dirpath, f)
            if f.endswith(".py") and path != os.path.join(PACKAGE, "config.py"):
                yield open(path).read()


def _aliases(tree) -> dict:
    """``{variable: config node names}`` of assignments like ``pg = cfg.PART_DISTILLATION.PIXEL_GROUPING``
    (also tuple assignments ``rk, pd = cfg.X.RANKING, cfg.X`` and loops over literal tuples)."""
    out = {}

    def bind(target, value):
        pairs = [(target, value)]
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            pairs = list(zip(target.elts, value.elts))
        for t, v in pairs:
            if isinstance(t, ast.Name) and isinstance(v, ast.Attribute) and v.attr.isupper():
                out.setdefault(t.id, set()).add(v.attr)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target, node.value)
        elif isinstance(node, ast.For) and isinstance(node.iter, (ast.Tuple, ast.List)):
            for value in node.iter.elts:  # for node, cls in ((cfg.A.B, X), ...)
                bind(node.target, value)
    return out


def unread_keys():
    """Keys whose ``PARENT.LEAF`` (or ``alias.LEAF`` with ``alias = ...PARENT``) appears nowhere."""
    texts = list(_sources())
    aliases = [(text, _aliases(ast.parse(text))) for text in texts]
    unread = []
    for key in added_keys():
        *path, leaf = key.split(".")
        parent = path[-1] if path else ""
        found = False
        for text, alias in aliases:
            names = [parent] + [a for a, nodes in alias.items() if parent in nodes]
            if any(re.search(rf"\b{re.escape(n)}\.{leaf}\b", text) for n in names if n):
                found = True
                break
        if not found:
            unread.append(key)
    return unread


def test_every_config_key_is_read_or_listed_as_official_yaml_only():
    unread = unread_keys()
    assert sorted(set(unread) - set(OFFICIAL_YAML_ONLY_KEYS)) == []


def test_official_yaml_only_keys_are_defined_and_not_read():
    keys = added_keys()
    assert set(OFFICIAL_YAML_ONLY_KEYS) <= set(keys)
    assert sorted(set(OFFICIAL_YAML_ONLY_KEYS) - set(unread_keys())) == []  # read: drop it from the list


def test_unimplemented_value_of_an_official_yaml_key_warns_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger="part_d2.config"):
        load_part_d2_config("", ["INPUT.COLOR_AUG_SSD", "True", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.5"])
    assert "INPUT.COLOR_AUG_SSD=True is not implemented" in caplog.text
    assert "OVERLAP_THRESHOLD" not in caplog.text  # any value: panoptic inference only
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="part_d2.config"):
        load_part_d2_config("", [])
    assert "not implemented" not in caplog.text


def test_checker_finds_a_dead_key(monkeypatch):
    """The checker itself: a key read nowhere is reported."""
    import part_d2.config as config

    original = config._add_federated_loss_config

    def with_dead_key(cfg):
        original(cfg)
        cfg.INPUT.PART_D2_NEVER_READ = 1

    monkeypatch.setattr(config, "_add_federated_loss_config", with_dead_key)
    assert "INPUT.PART_D2_NEVER_READ" in unread_keys()
