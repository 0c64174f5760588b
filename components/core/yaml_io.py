"""The one YAML reader of the project: safe (no Python objects) and strict about keys.

PyYAML keeps the last of two equal keys in a mapping without a word, so a file with two
`thresholds:` sections silently loses the first. Here a duplicated key is an error that
names both lines. Merge keys (`<<: *defaults`) may still be overridden, as YAML intends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.core.errors import ServoptError

_MERGE_TAG = "tag:yaml.org,2002:merge"


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


def parse_yaml(text: str, source: str | Path) -> Any:
    """The YAML document in `text`; errors name `source`, the line, column and problem."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ServoptError(f"{source}: not valid YAML{where} ({problem}); fix the file"
                           ) from None
