"""Which rows a benchmark measures: every model on the runtime TF Serving would use for it.

- A SavedModel directory: one row, in a Session (runtime "tensorflow").
- A SavedModel directory holding `model.tflite` (a TFLite variant): two rows of one
  version, `NAME@tflite` (what `--prefer_tflite_model=true` serves) and
  `NAME@tensorflow` (its `saved_model.pb`, served without the flag), so users see both
  paths and the gate judges the one the destination's server takes.
- A bare `.tflite` file: one row, in the interpreter. TF Serving serves TFLite only as
  `model.tflite` inside a SavedModel version directory, so such a row is not pushable.
- The baseline: one row, its Session path (its saved_model.pb) where it has one.

Each row records its runtime, the TF Serving configuration it ran with (see
serving_config: the default one, or one the configuration search tried, in a row named
`NAME@runtime:label`) and the `tensorflow_model_server` flags that make TF Serving run the
model the way it was measured.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from components.core.benchmark.config import BenchmarkConfig, ModelSpec
from components.core.benchmark.engines import EngineSpec, ResolvedModel
from components.core.benchmark.schema import RuntimeInfo
from components.core.requirements import TENSORFLOW_RUNTIME
from components.core.serving_config import NO_TFLITE_FLAG, ServingConfig, row_flags  # noqa: F401


@dataclass(frozen=True)
class Row:
    name: str  # the row's name in the result
    model: ModelSpec  # the model (version) it measures
    runtime: str
    path: Path  # what the runtime loads: the SavedModel directory or the .tflite file
    servable: bool  # TF Serving can serve this version (it has a SavedModel directory)
    beside_tflite: bool  # the version directory holds model.tflite
    # The TF Serving settings it runs with; None: the benchmark's defaults (default_config).
    config: ServingConfig | None = field(default=None, compare=False)
    # An earlier candidate row whose files this row's runtime loads byte for byte (a TFLite
    # variant's saved_model.pb is its source's graph): measured once, figures shared.
    twin: str | None = None

    def serving_config(self, settings: BenchmarkConfig) -> ServingConfig:
        return self.config or default_config(self.runtime, settings)

    def with_config(self, config: ServingConfig) -> Row:
        """The same version and runtime under another configuration, named after it."""
        base = self.name.split(":", 1)[0]
        if "@" not in base:
            base = f"{base}@{self.runtime}"
        return replace(self, name=f"{base}:{config.label()}", config=config)


def default_config(runtime: str, settings: BenchmarkConfig) -> ServingConfig:
    """The configuration every row starts from: the benchmark's thread and pool settings
    (by default TF Serving's: every core, one interpreter per pool)."""
    return ServingConfig(runtime=runtime, intra_op_threads=settings.intra_op_threads or 0,
                         inter_op_threads=settings.inter_op_threads or 0,
                         tflite_pools=settings.tflite_pool_count(),
                         tflite_interpreters_per_pool=settings.tflite_interpreters_per_pool)


def row_name(name: str, runtime: str, rows_of_model: int) -> str:
    return name if rows_of_model == 1 else f"{name}@{runtime}"


def session_fingerprint(model_dir: Path) -> str:
    """What a Session loads from a SavedModel directory (saved_model.pb, variables/,
    assets/), hashed; not model.tflite or assets.extra/, which it never reads."""
    digest = hashlib.sha256()
    files = [model_dir / "saved_model.pb", *sorted(
        path for sub in ("variables", "assets") for path in (model_dir / sub).rglob("*")
        if path.is_file())]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def plan_rows(models: list[ModelSpec], resolved: dict[str, ResolvedModel]) -> list[Row]:
    """Every model's rows, in order; a candidate's Session row identical to an earlier
    candidate's is that row's twin (the baseline is always measured: a copy of it is a
    candidate worth measuring, e.g. to check the gate on identical models)."""
    rows: list[Row] = []
    seen: dict[str, str] = {}  # fingerprint -> the first candidate Session row
    for index, model in enumerate(models):
        found = resolved[model.name]
        runtimes = found.runtimes()
        if index == 0 and len(runtimes) > 1:  # the baseline: its saved_model.pb only
            runtimes = [TENSORFLOW_RUNTIME]
        for runtime in runtimes:
            name, twin = row_name(model.name, runtime, len(runtimes)), None
            if index > 0 and runtime == TENSORFLOW_RUNTIME:
                twin = seen.setdefault(session_fingerprint(found.saved_model), name)
            rows.append(Row(name, model, runtime, found.path_for(runtime),
                            servable=found.saved_model is not None,
                            beside_tflite=found.saved_model is not None and bool(found.tflite),
                            twin=twin if twin != name else None))
    return rows


def served_row_plan(model: ModelSpec, found: ResolvedModel) -> Row:
    """The one row of the version served now: on the runtime and TF Serving configuration
    it was pushed with (the `configuration` the push writes into its
    assets.extra/serving_requirements.json), else on its requirements' runtime with the
    benchmark's default settings (a version pushed before configurations were recorded)."""
    from components.core.requirements import DEFAULT_REQUIREMENTS, read_requirements

    requirements = (read_requirements(found.saved_model) if found.saved_model
                    else DEFAULT_REQUIREMENTS)
    config = (ServingConfig.from_dict(requirements.configuration)
              if requirements.configuration else None)
    runtimes = found.runtimes()
    runtime = config.runtime if config else requirements.runtime
    if runtime not in runtimes:
        runtime, config = runtimes[-1], None
    return Row(model.name, model, runtime, found.path_for(runtime),
               servable=found.saved_model is not None,
               beside_tflite=found.saved_model is not None and bool(found.tflite),
               config=config)


def engine_spec(row: Row, settings: BenchmarkConfig) -> EngineSpec:
    config = row.serving_config(settings)
    return EngineSpec(runtime=row.runtime, model_path=str(row.path),
                      signature=settings.signature,
                      intra_op_threads=config.intra_op_threads,
                      inter_op_threads=config.inter_op_threads,
                      tflite_pools=config.tflite_pools,
                      tflite_interpreters_per_pool=config.tflite_interpreters_per_pool,
                      mixed_precision=config.mixed_precision, batching=config.batching)


# TF Serving's .bazelrc (tensorflow/serving 9d981c5, lines 55-59) builds XNNPACK with
# xnn_enable_avxvnni, _avxvnniint8, _avx256vnnigfni, _avx512amx and _avx512fp16 = false:
# its TFLite runs no AMX and no AVX-VNNI int8 kernels (AVX-512 VNNI is not left out).
# Python's TFLite may be built with them: the /proc/cpuinfo flags of such kernels.
XNNPACK_LEFT_OUT_INT8 = ("amx_int8", "amx_tile", "avx_vnni", "avx_vnni_int8")


def build_gap_note(runtime: str, precision: str, backend: str, flags: set[str]
                   ) -> str | None:
    """Why a figure may overstate TF Serving: a TFLite int8 row measured in-process
    (backend "session") on a CPU with kernels TF Serving's XNNPACK leaves out."""
    from components.core.requirements import TFLITE_RUNTIME

    present = [flag for flag in XNNPACK_LEFT_OUT_INT8 if flag in flags]
    if backend != "session" or runtime != TFLITE_RUNTIME or "int8" not in precision \
            or not present:
        return None
    return (f"possibly optimistic: TFLite {precision} measured in-process on a CPU with "
            f"{', '.join(present)}; TF Serving's XNNPACK is built without AMX and AVX-VNNI "
            "kernels (its .bazelrc), this Python's TFLite may use them; measure with "
            "--backend tfserving for TF Serving's own figure")


def runtime_info(row: Row, settings: BenchmarkConfig) -> RuntimeInfo:
    """The row's runtime, its configuration and the flags that select it in TF Serving."""
    config = row.serving_config(settings)
    flags = row_flags(config, row.beside_tflite)
    from components.core.requirements import cpu_flags, read_requirements

    version = row.path.parent if row.runtime != TENSORFLOW_RUNTIME else row.path
    precision = read_requirements(version).precision if row.servable else ""
    note = build_gap_note(row.runtime, precision, settings.backend, cpu_flags())
    return RuntimeInfo(runtime=row.runtime, version=row.model.name, settings=config.settings(),
                       server_flags=flags if row.servable else [], servable=row.servable,
                       configuration=config.to_dict(), label=config.label(),
                       measured_as=row.twin, notes=[note] if note else [])


def row_runner(row: Row, output_keys: list[str], settings: BenchmarkConfig,
               pools: dict[int, list]):
    """What measures `row`: a worker process running it the way TF Serving would
    (backend "session"), or a tensorflow_model_server started with the row's flags
    (backend "tfserving", see tfserving). The configuration search starts its rows here
    too, so it runs the same way on either backend."""
    if settings.backend == "tfserving":
        from components.core.benchmark.tfserving import served_row, tfserving_runner

        return tfserving_runner(served_row(row, settings, pools), settings.signature,
                                output_keys, settings.tfserving)
    from components.core.benchmark.worker import ProcessRunner

    return ProcessRunner(engine_spec(row, settings))
