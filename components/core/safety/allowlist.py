"""The allowlist lookup: the category of an op type, from the generated table of TF's own
ops and of the libraries TF Serving links (op_table.py), and the registration of those
libraries' ops in this process before a model that uses them is loaded.

A library op (TF Text's, ...) is allowed by the same rules as TF's own ops, and only when
its package imports here: servopt must load the model to optimize, verify and benchmark
it. Where it does not, the category names the package that provides it.
"""

from __future__ import annotations

from collections.abc import Iterable

from components.core.errors import ServoptError
from components.core.safety.categories import COMPUTE, UNKNOWN
from components.core.safety.libraries import LIBRARIES, OpLibrary, load
from components.core.safety.op_table import LIBRARY_OP_TABLE, OP_TABLE


def library_of(name: str) -> OpLibrary | None:
    """The library TF Serving links that registers op `name`, if any."""
    for key, ops in LIBRARY_OP_TABLE.items():
        if name in ops:
            return LIBRARIES[key]
    return None


def op_category(name: str) -> str:
    """The category the table gives op `name` (UNKNOWN when it holds none). A library op
    the table allows is allowed only once its package is imported here (this imports it);
    otherwise its category says which package provides it."""
    if name in OP_TABLE:
        return OP_TABLE[name]
    library = library_of(name)
    if library is None:
        return UNKNOWN
    category = LIBRARY_OP_TABLE[library.key][name]
    if category == COMPUTE:
        why = load(library)
        if why:
            return f"a {library.name} op, not available here: {why}"
    return category


def register_libraries(op_types: Iterable[str], where: str) -> list[str]:
    """Imports the libraries whose ops `op_types` holds, so that TF's loader finds them;
    returns their names. Raises ServoptError naming the package that is missing."""
    needed: dict[str, list[str]] = {}
    for name in set(op_types) - OP_TABLE.keys():
        library = library_of(name)
        if library is not None:
            needed.setdefault(library.key, []).append(name)
    for key, ops in needed.items():
        why = load(LIBRARIES[key])
        if why:
            raise ServoptError(f"{where}: the model uses {', '.join(sorted(ops))} "
                               f"({LIBRARIES[key].name} ops): {why}")
    return [LIBRARIES[key].name for key in needed]
