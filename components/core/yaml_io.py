"""The one YAML reader of the project: safe (no Python objects) and strict about keys.

PyYAML keeps the last of two equal keys in a mapping without a word, so a file with two
`thresholds:` sections silently loses the first. Here a duplicated key is an error that
names both lines. Merge keys (`<<: *defaults`) may still be overridden, as YAML intends.

A config file is untrusted input too: aliases may be nested so that a few hundred bytes
expand to billions of values ("billion laughs"), so a document whose expansion exceeds
`MAX_VALUES` is refused before it is built (and nothing expanded is ever echoed); an
integer longer than `MAX_INT_DIGITS` is refused too (Python refuses to parse one over
4300 digits, with a traceback).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from components.core.errors import ServoptError

_MERGE_TAG = "tag:yaml.org,2002:merge"


def default_config(name: str) -> Path:
    """The packaged default file `name` (optimization.yaml, benchmark.yaml,
    thresholds.yaml) of components/configs/; light to import (no TensorFlow), so a command
    can read its defaults and refuse bad input before TensorFlow loads."""
    return Path(str(importlib.resources.files("components") / "configs" / name))

MAX_VALUES = 100_000  # scalars, lists and mappings once aliases are expanded
MAX_INT_DIGITS = 30


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in first_seen:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"duplicate key {key!r}, first at line {first_seen[key] + 1}; "
                            "only one may stay", key_node.start_mark)
                    first_seen[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: the base class reports it
                    break
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        if len(str(node.value)) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer {len(str(node.value))} characters long; numbers "
                f"in these files have at most {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", UniqueKeyLoader.construct_yaml_int)


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """How many values `node` becomes with every alias expanded, counted without
    expanding (an alias is the very node it names: its size is counted once, reused)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_VALUES + 1  # a node inside itself (a recursive alias): too big
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes)
                    for k, v in node.value)
    sizes[id(node)] = size = min(size, MAX_VALUES + 1)
    return size


def parse_yaml(text: str, source: str | Path) -> Any:
    """The YAML document in `text`; errors name `source`, the line, column and problem."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise ServoptError(f"{source}: its aliases expand to more than {MAX_VALUES} "
                               "values (nested anchors and aliases); write the values out "
                               "or use fewer aliases")
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ServoptError(f"{source}: not valid YAML{where} ({problem}); fix the file"
                           ) from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ServoptError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ServoptError(f"{path}: cannot read the config file ({err})") from None
    data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServoptError(f"{path}: expected a mapping of sections at the top level")
    return data


def section(data: dict[str, Any], name: str, source: Path | str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ServoptError(f"{source}: section '{name}' must be a mapping")
    return value


# Field metadata: a list setting that also takes one item as a plain string.
ONE_OR_LIST = "one_or_list"


def fill_dataclass(cls, values: dict[str, Any], source: Path | str, where: str):
    """cls(**values), with unknown keys and type mismatches reported by file and key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ServoptError(f"{source}: unknown key '{where}.{unknown[0]}'; known keys: "
                           f"{', '.join(fields)}")
    defaults = cls()
    for key, value in values.items():
        default = getattr(defaults, key)
        one_or_list = fields[key].metadata.get(ONE_OR_LIST, False)
        if one_or_list and isinstance(value, str):
            continue  # one item written without brackets
        if value is not None and default is not None and not _same_kind(value, default):
            raise ServoptError(f"{source}: '{where}.{key}' must be "
                               f"{type(default).__name__}{' (or one item)' * one_or_list}, "
                               f"got {value!r}")
    return cls(**values)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))
