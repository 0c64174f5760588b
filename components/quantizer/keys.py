"""The Quantizer's variant outputs and the short name each gets in benchmarks and reports
(defined once, in components.core.producers)."""

from components.core.identity import VARIANT_OUTPUTS

__all__ = ["VARIANT_OUTPUTS"]
