"""The optimization library: load, describe, freeze, optimize, quantize, verify.

Nothing in here imports TFX or KFP; the TFX components, the KFP components and the
`servopt` CLI are thin adapters over these modules.
"""

from components.core import tf_setup  # noqa: E402,F401  (first TensorFlow import, quietly)
