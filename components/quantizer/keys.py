"""The Quantizer's variant outputs and the short name each gets in benchmarks and reports."""

VARIANT_OUTPUTS = {"bfloat16_model": "bfloat16", "tflite_model": "tflite"}
