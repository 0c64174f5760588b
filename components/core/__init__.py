"""The optimization library: load, describe, freeze, optimize, quantize, verify.

Nothing in here imports TFX or KFP; the TFX components, the KFP components and the
`servopt` CLI are thin adapters over these modules. Importing the package imports nothing
heavy: TensorFlow is loaded (quietly, by components.core.tf_setup) by the modules that
need it, so `servopt --help` and the settings and thresholds readers start in a blink.
"""
