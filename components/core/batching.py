"""TF Serving's server-side batching (`--enable_batching`): its parameters.

tensorflow/serving `servables/tensorflow/session_bundle_config.proto` (BatchingParameters):
the shared batch scheduler's options (max_batch_size, batch_timeout_micros,
max_enqueued_batches, num_batch_threads) and BatchingSession's allowed_batch_sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BATCHING_PARAMS_FILE = "batching_params.pbtxt"  # bundle_factory_util.cc kBatchingParamsFilename
# MINIMAL (helper C), as helper B's: the server-wide --batching_parameters_file, beside the
# version directories (TF Serving ignores non-numeric names there).
SERVER_BATCHING_FILE = "batching_parameters.pbtxt"
SERVER_BATCHING_FILE_PLACEHOLDER = f"<model_base_path>/{SERVER_BATCHING_FILE}"


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int
    batch_timeout_micros: int
    num_batch_threads: int
    max_enqueued_batches: int
    allowed_batch_sizes: tuple[int, ...] = ()

    def label(self) -> str:
        return f"batching<={self.max_batch_size},{self.batch_timeout_micros}us"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed_batch_sizes"] = list(self.allowed_batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchingParameters:
        return cls(**{**data, "allowed_batch_sizes": tuple(data.get("allowed_batch_sizes", ()))})

    def to_pbtxt(self) -> str:
        """The text proto TF Serving parses (BatchingParameters: Int64Value wrappers, and
        the repeated plain allowed_batch_sizes). MINIMAL (helper C); helper B's replaces it."""
        lines = [f"{key} {{ value: {getattr(self, key)} }}" for key in
                 ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                  "num_batch_threads")]
        lines += [f"allowed_batch_sizes: {size}" for size in self.allowed_batch_sizes]
        return "\n".join(lines) + "\n"


def batching_flags(params: BatchingParameters | None) -> list[str]:
    """The tensorflow_model_server flags that turn on `params` for one model (main.cc)."""
    if params is None:
        return []
    return ["--enable_batching", "--enable_per_model_batching_parameters"]


def write_batching_params(version_dir: str | Path, params: BatchingParameters) -> Path:
    """Writes `params` where --enable_per_model_batching_parameters reads them: the
    version directory's batching_params.pbtxt (bundle_factory_util.cc). MINIMAL (helper C);
    helper B's replaces it."""
    path = Path(version_dir) / BATCHING_PARAMS_FILE
    path.write_text(params.to_pbtxt())
    return path


def server_batching_file(params: BatchingParameters) -> str | None:
    """MINIMAL (helper C), as helper B's: the server-wide file's text (its thread pool)."""
    if params.num_batch_threads is None:
        return None
    return (f"num_batch_threads {{ value: {params.num_batch_threads} }}\n"
            'thread_pool_name { value: "model_server_batch_threads" }\n')


def write_server_batching_file(path: Path, params: BatchingParameters) -> Path | None:
    """MINIMAL (helper C), as helper B's: the server-wide file at `path`, where needed."""
    text = server_batching_file(params)
    if text is None:
        return None
    Path(path).write_text(text)
    return Path(path)
