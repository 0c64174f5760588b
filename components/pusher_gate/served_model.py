"""Find the model served now for a destination: the newest PushedModel in ML Metadata that
was pushed (`pushed` = 1) to the same TF Serving base directory.

A TFX Resolver with this strategy feeds PusherGate's optional `served_model` input, the
way TFX's Evaluator gets its baseline through LatestBlessedModelStrategy.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts

SERVED_KEY = "served_model"
BASE_DIRECTORY_PROPERTY = "pushed_base_directory"


class LatestPushedModelStrategy(resolver.ResolverStrategy):
    def __init__(self, base_directory: str):
        self._base_directory = base_directory

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]
                          ) -> dict[str, list[types.Artifact]] | None:
        pushed = [a for a in input_dict.get(SERVED_KEY, [])
                  if _int(a, "pushed") == 1
                  and _string(a, BASE_DIRECTORY_PROPERTY) == self._base_directory]
        return {SERVED_KEY: sorted(pushed, key=lambda a: a.id)[-1:]}


def _int(artifact: types.Artifact, key: str) -> int | None:
    return artifact.get_int_custom_property(key) if artifact.has_custom_property(key) else None


def _string(artifact: types.Artifact, key: str) -> str | None:
    return (artifact.get_string_custom_property(key) if artifact.has_custom_property(key)
            else None)


def served_model_resolver(base_directory: str) -> resolver.Resolver:
    return resolver.Resolver(
        strategy_class=LatestPushedModelStrategy,
        config={"base_directory": base_directory},
        **{SERVED_KEY: types.Channel(type=standard_artifacts.PushedModel)},
    ).with_id("served_model_resolver")
