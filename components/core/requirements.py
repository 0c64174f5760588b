"""What a model version needs from the TF Serving that serves it, stored with the model.

A variant is only as fast as the runtime that executes it: a bf16 graph needs CPU bf16
units and oneDNN, a TFLite variant needs `--prefer_tflite_model=true`. The producing step
records this in `assets.extra/serving_requirements.json` inside the SavedModel directory
(TF Serving's own place for files beside a model, where warm-up requests live too), so it
travels with the model to the push destination, and the benchmark and the gate read it
from there. A model without the file needs nothing special: TensorFlow runtime, any CPU.

Layout of a TFLite variant (what TF Serving's `--prefer_tflite_model` serves):
    <version>/saved_model.pb    fp32 graph, served without the flag
    <version>/model.tflite      served with the flag, ALONE (saved_model_bundle_factory.cc
                                loads no saved_model.pb then): the signatures in its
                                signature_defs_metadata, under the SavedModel's names and
                                keys; `lacks_signatures` lists the source's signatures it
                                does not serve, and why
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.core.errors import ServoptError

ASSETS_EXTRA_DIR = "assets.extra"
REQUIREMENTS_FILE = "serving_requirements.json"
TFLITE_MODEL_FILE = "model.tflite"  # the name TF Serving's TfLiteSession looks for
TENSORFLOW_RUNTIME = "tensorflow"
TFLITE_RUNTIME = "tflite"
PREFER_TFLITE_FLAG = "--prefer_tflite_model=true"
# tensorflow_serving/model_servers/main.cc `--mixed_precision`; saved_model_bundle_factory.cc
# turns on Grappler's auto_mixed_precision_onednn_bfloat16 for every model the server loads.
MIXED_PRECISION_BF16_FLAG = "--mixed_precision=bfloat16"
# TF decides once per process whether it runs oneDNN: this variable, else on by default on
# CPUs with AVX512_VNNI / AVX512_BF16 / AVX_VNNI / AMX (tensorflow/core/util/port.cc).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


@dataclass(frozen=True)
class ServingRequirements:
    """The runtime a variant was built and verified for, and what that runtime needs."""

    runtime: str = TENSORFLOW_RUNTIME  # "tensorflow" (saved_model.pb) or "tflite"
    precision: str = "float32"  # compute precision: float32, bfloat16, float16, int8, ...
    cpu_features: tuple[str, ...] = ()  # any one of these /proc/cpuinfo flags suffices
    server_flags: tuple[str, ...] = ()  # tensorflow_model_server flags that select it
    environment: dict[str, str] = field(default_factory=dict)  # e.g. TF_ENABLE_ONEDNN_OPTS
    note: str = ""
    # tflite: source signatures model.tflite does not serve -> why (the gate's parity check)
    lacks_signatures: dict[str, str] = field(default_factory=dict)
    # Written by the push into the pushed version: the TF Serving configuration the gate
    # chose for it (ServingConfig.to_dict()) and the whole command that serves it.
    configuration: dict | None = None
    server_command: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ServingRequirements:
        return cls(runtime=data.get("runtime", TENSORFLOW_RUNTIME),
                   precision=data.get("precision", "float32"),
                   cpu_features=tuple(data.get("cpu_features", ())),
                   server_flags=tuple(data.get("server_flags", ())),
                   environment=dict(data.get("environment", {})),
                   note=data.get("note", ""),
                   lacks_signatures=dict(data.get("lacks_signatures", {})),
                   configuration=data.get("configuration"),
                   server_command=tuple(data.get("server_command", ())))

    def cpu_supported(self, cpu_flags: set[str]) -> bool:
        return not self.cpu_features or bool(set(self.cpu_features) & cpu_flags)

    @property
    def needs_onednn(self) -> bool:
        """The variant runs only where TF runs oneDNN (e.g. bf16 depthwise kernels)."""
        return self.environment.get(ONEDNN_ENV) == "1"


DEFAULT_REQUIREMENTS = ServingRequirements()


def requirements_path(model_dir: Path) -> Path:
    return Path(model_dir) / ASSETS_EXTRA_DIR / REQUIREMENTS_FILE


def write_requirements(model_dir: Path, requirements: ServingRequirements) -> None:
    path = requirements_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(requirements.to_dict(), indent=2, sort_keys=True) + "\n")


def read_requirements(model_dir: Path) -> ServingRequirements:
    """The model's recorded requirements; a model without the file needs nothing special."""
    path = requirements_path(model_dir)
    if not path.is_file():
        return DEFAULT_REQUIREMENTS
    try:
        return ServingRequirements.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as err:
        raise ServoptError(f"{path}: not a valid serving requirements file ({err}); "
                           "re-create the model with servopt optimize") from None


def has_tflite_model(model_dir: Path) -> bool:
    return (Path(model_dir) / TFLITE_MODEL_FILE).is_file()


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """This machine's CPU feature flags (e.g. avx512_bf16, amx_bf16); empty where unknown."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")
