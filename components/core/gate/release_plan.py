"""Release plans over TF Serving's model config: pure functions, no file IO.

A model's release state is what TF Serving reads from its `ModelConfig`
(config/model_server_config.proto): the versions it serves (`model_version_policy`) and
the `version_labels`. The roles:

- stable S: `version_labels[stable]`, what clients of `/v1/models/NAME/labels/stable` get;
- canary C: `version_labels[canary]`; C == S when no canary is in flight (the promoted
  state of g3doc/serving_config.md ~166-181: both labels on the promoted version);
- previous P: the newest served, unlabelled version below S (kept served after a
  promotion, so that a rollback is one label move onto a loaded version: the doc's
  "revert to the old config that has version 42 as stable", ~183-186);
- pending N: the newest served, unlabelled version above every labelled one: a pushed
  version served by step 1 whose label move (step 2) has not happened yet.

The rules each plan obeys, from TF Serving's source:

- A label may point only at a version that is loaded and available when the config is
  reloaded (model_servers/server_core.cc, UpdateModelVersionLabelMap ~549-585: checked
  against the servable states before the new config's models are added ~512-524);
  a refused label fails the whole reload). So a new version is served first (step 1,
  labels unchanged) and labelled later (step 2), and a version leaves `specific` only in
  a config where no label points at it.
- A reload replaces the whole model list and each model's policy: a model left out is
  torn down (server_core.cc ~430-433, ReloadStoragePathSourceConfig), and only the
  versions in `specific` are aspired (file_system_storage_path_source.cc
  AspireSpecificVersions ~215-245), so a version left out unloads.
- A request without a version gets the highest loaded version (server_core.cc
  ServableRequestFromModelSpec ~864-867, ServableRequest::Latest): under
  specific{S, C} unlabelled traffic goes to the canary; a rollback therefore unloads what
  it leaves, or unlabelled clients would keep getting it.
- Labels match [a-zA-Z0-9_]+ (g3doc/serving_config.md ~223-224; the REST path
  http_rest_api_util.cc ~32 takes /labels/([^/:]+)).
- Only integer directory names are versions (sources/storage_path/
  file_system_storage_path_source.cc ParseVersionNumber ~87-89); a `specific` version
  missing on disk is only logged and not served (AspireSpecificVersions ~235-243).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from components.core.errors import ServoptError

LABEL_PATTERN = re.compile(r"[a-zA-Z0-9_]+")  # g3doc/serving_config.md ~223-224
POLICIES = ("latest", "all", "specific")


def check_label_name(label: str, source: str) -> str:
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise ServoptError(f"{source}: version label {label!r} is not one TF Serving accepts "
                           "(letters, digits and underscores only, [a-zA-Z0-9_]+; "
                           "g3doc/serving_config.md); rename it")
    return label


@dataclass(frozen=True)
class ModelState:
    """One model's entry of a model config, as far as a release concerns it."""

    name: str
    base_path: str
    policy: str = "latest"  # latest | all | specific (model_version_policy's oneof)
    num_versions: int = 1  # latest{num_versions}; unset or 0 means 1
    specific: tuple[int, ...] = ()  # specific{versions}, sorted
    labels: dict[str, int] = field(default_factory=dict)

    def served(self, on_disk: Iterable[int]) -> tuple[int, ...]:
        """The versions TF Serving loads from `on_disk` under this policy."""
        disk = sorted(set(on_disk))
        if self.policy == "specific":
            return tuple(v for v in disk if v in self.specific)
        if self.policy == "all":
            return tuple(disk)
        return tuple(disk[-max(self.num_versions, 1):]) if disk else ()

    def with_served(self, versions: Iterable[int], labels: dict[str, int]) -> ModelState:
        """This model under specific{versions}, with `labels`; every labelled version is
        served too, so no label is left on a version the reload unloads."""
        served = set(versions) | set(labels.values())
        return replace(self, policy="specific", num_versions=1,
                       specific=tuple(sorted(served)), labels=dict(labels))


@dataclass(frozen=True)
class Roles:
    stable: int | None
    canary: int | None
    previous: int | None
    pending: int | None


def roles(state: ModelState, on_disk: Iterable[int], stable_label: str,
          canary_label: str) -> Roles:
    served = state.served(on_disk)
    labelled = set(state.labels.values())
    stable = state.labels.get(stable_label)
    canary = state.labels.get(canary_label)
    previous = max((v for v in served if v not in labelled and stable is not None
                    and v < stable), default=None)
    top = max(labelled, default=None)
    pending = max((v for v in served if v not in labelled and (top is None or v > top)),
                  default=None)
    return Roles(stable, canary, previous, pending)


def check_state(state: ModelState, on_disk: Iterable[int], source: str) -> None:
    """Refuses a state TF Serving would refuse to reload: a label with a name it rejects,
    or on a version that is not on disk or not served (server_core.cc ~574-584)."""
    disk = set(on_disk)
    served = set(state.served(disk))
    for label, version in sorted(state.labels.items()):
        check_label_name(label, source)
        if version not in disk:
            raise ServoptError(f"{source}: label '{label}' of model '{state.name}' points at "
                               f"version {version}, which is not in {state.base_path}; TF "
                               "Serving refuses the whole config (server_core.cc "
                               "UpdateModelVersionLabelMap); point it at a version on disk")
        if version not in served:
            raise ServoptError(f"{source}: label '{label}' of model '{state.name}' points at "
                               f"version {version}, which the version policy does not serve; "
                               "TF Serving refuses the whole config (a label needs a loaded "
                               "version, server_core.cc UpdateModelVersionLabelMap); add it "
                               "to specific{versions} or move the label")


@dataclass(frozen=True)
class Plan:
    """The configs to write in order. steps[1], when present, may be written only once
    TF Serving has loaded the versions steps[0] added (its label moves need them)."""

    operation: str
    before: ModelState
    steps: tuple[ModelState, ...]
    version: int | None = None  # the version the operation is about
    note: str = ""

    @property
    def after(self) -> ModelState:
        return self.steps[-1] if self.steps else self.before


def plan_push(state: ModelState, version: int, on_disk: Iterable[int], stable_label: str,
              canary_label: str) -> Plan:
    """A pushed version: step 1 serves it beside what is served (labels unchanged), step 2
    labels it: `stable` (and `canary`) on a first labelled push, else `canary`."""
    disk = set(on_disk) | {version}
    r = roles(state, disk - {version}, stable_label, canary_label)
    if r.stable is None:
        # First labelled push: what was served (under any policy) stays served as the
        # rollback target; the new version becomes stable and canary.
        before = state.served(disk - {version})
        keep = {max(before)} if before else set()
        labels = dict(state.labels)  # other labels stay, and their versions served
        step1 = state.with_served(keep | {version}, labels)
        step2 = step1.with_served(keep | {version},
                                  {**labels, stable_label: version, canary_label: version})
        return Plan("push", state, (step1, step2), version,
                    f"version {version} becomes '{stable_label}' once loaded")
    kept = {v for v in (r.previous, r.stable, r.canary) if v is not None}
    step1 = state.with_served(kept | {version}, state.labels)
    labels = {**state.labels, canary_label: version}
    step2 = state.with_served({v for v in (r.previous, r.stable) if v is not None} | {version},
                              labels)
    return Plan("push", state, (step1, step2), version,
                f"version {version} becomes '{canary_label}' once loaded, beside "
                f"'{stable_label}' {r.stable}")


def plan_label(state: ModelState, on_disk: Iterable[int], stable_label: str,
               canary_label: str, version: int | None = None) -> Plan:
    """Step 2 of a push: the labels move onto the pending version (the newest served
    version above every labelled one), which the caller has seen loaded. A version that
    is no longer the pending one (a newer push superseded it) moves nothing."""
    disk = set(on_disk)
    r = roles(state, disk, stable_label, canary_label)
    if r.pending is None or (version is not None and version != r.pending):
        what = (f"version {version} is not the newest served unlabelled version"
                if version is not None else "no served version is waiting for a label")
        return Plan("label", state, (), version, f"nothing to label: {what}")
    pending = r.pending
    if r.stable is None:
        keep = {v for v in state.served(disk) if v in state.labels.values()}
        previous = max((v for v in state.served(disk) if v < pending), default=None)
        served = keep | {pending} | ({previous} if previous is not None else set())
        after = state.with_served(served, {**state.labels, stable_label: pending,
                                           canary_label: pending})
        return Plan("label", state, (after,), pending,
                    f"'{stable_label}' and '{canary_label}' -> {pending}")
    served = {v for v in (r.previous, r.stable) if v is not None} | {pending}
    after = state.with_served(served, {**state.labels, canary_label: pending})
    return Plan("label", state, (after,), pending, f"'{canary_label}' -> {pending}")


def plan_promote(state: ModelState, on_disk: Iterable[int], stable_label: str,
                 canary_label: str, source: str) -> Plan:
    """The canary becomes stable: both labels on it (serving_config.md ~166-181), the old
    stable stays served unlabelled as the rollback target, the older one unloads."""
    r = roles(state, on_disk, stable_label, canary_label)
    if r.stable is None or r.canary is None or r.canary == r.stable:
        raise ServoptError(f"{source}: model '{state.name}' has no canary to promote "
                           f"('{stable_label}' {r.stable}, '{canary_label}' {r.canary}); "
                           "push a version with --release labels and label it first")
    after = state.with_served({r.stable, r.canary}, {**state.labels, stable_label: r.canary,
                                                     canary_label: r.canary})
    return Plan("promote", state, (after,), r.canary,
                f"'{stable_label}' {r.stable} -> {r.canary}")


def plan_rollback(state: ModelState, on_disk: Iterable[int], stable_label: str,
                  canary_label: str, source: str, canary_only: bool = False) -> Plan:
    """`stable` back on the previous stable version (served, so one label move), the
    canary label with it; the versions left are unloaded (unlabelled traffic goes to the
    highest loaded version) but stay on disk."""
    r = roles(state, on_disk, stable_label, canary_label)
    if r.stable is None:
        raise ServoptError(f"{source}: model '{state.name}' has no '{stable_label}' label; "
                           "nothing to roll back")
    if canary_only:
        if r.canary is None or r.canary == r.stable:
            raise ServoptError(f"{source}: model '{state.name}' has no canary in flight "
                               f"('{canary_label}' is on '{stable_label}' {r.stable})")
        served = {v for v in (r.previous, r.stable) if v is not None}
        after = state.with_served(served, {**state.labels, canary_label: r.stable})
        return Plan("rollback", state, (after,), r.stable,
                    f"canary {r.canary} withdrawn; '{canary_label}' -> {r.stable}")
    if r.previous is None:
        raise ServoptError(f"{source}: model '{state.name}' has no previous stable version "
                           f"served below '{stable_label}' {r.stable} (a rollback moves the "
                           "label only onto a loaded version); add the version to "
                           "specific{versions}, wait until it is loaded, and roll back then")
    labels = {k: v for k, v in state.labels.items() if k not in (stable_label, canary_label)}
    after = state.with_served({r.previous}, {**labels, stable_label: r.previous,
                                             canary_label: r.previous})
    return Plan("rollback", state, (after,), r.previous,
                f"'{stable_label}' {r.stable} -> {r.previous}")


def plan_retention(state: ModelState | None, on_disk: Iterable[int], stable_label: str,
                   keep_last: int = 0) -> list[int]:
    """Versions that may be removed: none a label points at, none listed in `specific`,
    none newer than stable (a canary, a version pushed but not yet in the config, one a
    rollback left), none the policy serves, never the newest when nothing is served, and
    none of the newest `keep_last`."""
    disk = sorted(set(on_disk))
    if not disk:
        return []
    if state is None:
        state = ModelState("", "")  # no entry: TF Serving's default, latest{1}
    keep = set(state.served(disk)) | set(state.labels.values()) | set(state.specific)
    stable = state.labels.get(stable_label)
    if stable is not None:
        keep |= {v for v in disk if v > stable}
    if not state.served(disk):
        keep.add(disk[-1])
    if keep_last:
        keep |= set(disk[-keep_last:])
    return [v for v in disk if v not in keep]
