"""The benchmark task's machine: settings of the compiled pipeline, unset by default.

The benchmark ranks (variant, configuration) pairs on the CPU it runs on, and the ranking
is only the serving nodes' when it runs on their machine type (bf16, VNNI and AVX-512
change it). KFP v2 sets a task's container resources at compile time
(`PipelineTask.set_cpu_request`, `set_cpu_limit`, `set_memory_request`,
`set_memory_limit`; the IR's `resources` of the task's executor). On Kubernetes, the
scheduler places the pod on a node with those resources; Vertex AI Pipelines picks the
machine type for the limits (and an accelerator for `set_accelerator_type`). Choosing a
node pool or CPU platform by label needs a node selector, which kfp 2.16 has only in the
separate kfp-kubernetes package (`kfp.kubernetes.add_node_selector`), not installed here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from components.core.errors import ServoptError


@dataclass(frozen=True)
class TaskResources:
    """Kubernetes quantities, e.g. cpu "2" or "500m", memory "8G" or "16Gi"; None: unset
    (the cluster's or Vertex AI's default machine)."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    accelerator_type: str | None = None  # e.g. "NVIDIA_TESLA_T4"; with accelerator_limit
    accelerator_limit: int | None = None

    def apply(self, task, source: str = "benchmark resources"):
        """Sets these resources on a kfp PipelineTask; a malformed quantity is refused
        naming the setting."""
        setters = {"cpu_request": task.set_cpu_request, "cpu_limit": task.set_cpu_limit,
                   "memory_request": task.set_memory_request,
                   "memory_limit": task.set_memory_limit,
                   "accelerator_type": task.set_accelerator_type,
                   "accelerator_limit": task.set_accelerator_limit}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            try:
                setters[item.name](value if item.name == "accelerator_limit" else str(value))
            except (ValueError, TypeError) as err:
                raise ServoptError(f"{source}: {item.name} {value!r} is not accepted by KFP "
                                   f"({err}); give a Kubernetes quantity such as "
                                   "cpu '2' or '500m', memory '8G' or '16Gi'") from None
        return task

    def is_set(self) -> bool:
        return any(getattr(self, item.name) is not None for item in fields(self))
