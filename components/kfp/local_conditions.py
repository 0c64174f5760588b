"""Make `dsl.If` work under `kfp.local` (kfp 2.16): evaluate the compiled condition.

The compiler turns `dsl.If(gate.outputs["blessed"] == True)` into the CEL expression
`inputs.parameter_values['pipelinechannel--gate-blessed'] == true`. kfp 2.16's local
orchestrator (`kfp.local.orchestrator.enhanced_dag_orchestrator.ConditionEvaluator`)
substitutes values into that text and runs Python's eval on it, which always raises; the
error is swallowed and every condition counts as false, so a conditional task never runs
locally (kubeflow/pipelines#13313, open at the time of writing). KFP and Vertex AI
evaluate the same expression correctly.

`local_conditions()` replaces that evaluator, while a local run lasts, with one for the
subset of CEL the KFP compiler emits: parameter references, literals (true, false, null,
numbers, quoted strings), int()/double()/string() casts, comparisons, !, && and ||, and
parentheses. An expression outside the subset, or a reference that cannot be resolved,
raises ServoptError: a condition is never silently false.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from components.core.errors import ServoptError

CHANNEL_PREFIX = "pipelinechannel--"
_TOKEN = re.compile(r"""\s*(?:
    (?P<ref>inputs\.parameter_values\[(?P<q>['"])(?P<name>[^'"]+)(?P=q)\])
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()])
  | (?P<word>[A-Za-z_]\w*)
)""", re.VERBOSE)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_CASTS: dict[str, Callable[[Any], Any]] = {"int": int, "double": float, "string": str}
_LITERALS = {"true": True, "false": False, "null": None}


def tokenize(expression: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if not match or match.end() == position:
            raise ServoptError(f"cannot evaluate the pipeline condition {expression!r} "
                               f"locally (at character {position}); run it on KFP or Vertex")
        kind = match.lastgroup if match.lastgroup not in ("q", "name") else "ref"
        text = match.group("name") if kind == "ref" else match.group(kind)
        tokens.append((kind, text))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent: or := and ('||' and)*; and := not ('&&' not)*;
    not := '!' not | compare; compare := value (op value)?; value := literal | ref |
    cast '(' or ')' | '(' or ')'."""

    def __init__(self, expression: str, resolve: Callable[[str], Any]):
        self.expression = expression
        self.tokens = tokenize(expression)
        self.index = 0
        self.resolve = resolve

    def parse(self) -> Any:
        value = self._or()
        if self.index != len(self.tokens):
            self._fail(f"unexpected {self.tokens[self.index][1]!r}")
        return value

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, text: str) -> bool:
        token = self._peek()
        if token and token[0] == "op" and token[1] == text:
            self.index += 1
            return True
        return False

    def _or(self) -> Any:
        value = self._and()
        while self._take("||"):
            right = self._and()
            value = bool(value) or bool(right)
        return value

    def _and(self) -> Any:
        value = self._not()
        while self._take("&&"):
            right = self._not()
            value = bool(value) and bool(right)
        return value

    def _not(self) -> Any:
        if self._take("!"):
            return not self._not()
        return self._compare()

    def _compare(self) -> Any:
        left = self._value()
        token = self._peek()
        if token and token[0] == "op" and token[1] in _COMPARE:
            self.index += 1
            return _COMPARE[token[1]](left, self._value())
        return left

    def _value(self) -> Any:
        token = self._peek()
        if token is None:
            self._fail("it ends too early")
        kind, text = token
        self.index += 1
        if kind == "ref":
            return self.resolve(text)
        if kind == "string":
            return ast.literal_eval(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "word" and text in _LITERALS:
            return _LITERALS[text]
        if kind == "word" and text in _CASTS and self._take("("):
            value = self._or()
            self._expect(")")
            return _CASTS[text](value)
        if kind == "op" and text == "(":
            value = self._or()
            self._expect(")")
            return value
        self._fail(f"unexpected {text!r}")

    def _expect(self, text: str) -> None:
        if not self._take(text):
            self._fail(f"expected {text!r}")

    def _fail(self, why: str):
        raise ServoptError(f"cannot evaluate the pipeline condition {self.expression!r} "
                           f"locally: {why}")


def channel_value(name: str, io_store) -> Any:
    """The value of a pipeline channel in the DAG being run: a pipeline parameter
    (`pipelinechannel--model_uri`) or a task output (`pipelinechannel--gate-blessed`)."""
    bare = name[len(CHANNEL_PREFIX):] if name.startswith(CHANNEL_PREFIX) else name
    for key in (name, bare):
        with contextlib.suppress(ValueError):
            return io_store.get_parent_input(key)
    parts = bare.split("-")
    for cut in range(len(parts) - 1, 0, -1):
        with contextlib.suppress(ValueError):
            return io_store.get_task_output("-".join(parts[:cut]), "-".join(parts[cut:]))
    raise ServoptError(f"the pipeline condition refers to {name!r}, which is neither a "
                       "pipeline parameter nor an output of a task that ran")


def evaluate_condition(condition: str, io_store) -> bool:
    """What KFP's backend decides for a task's trigger condition."""
    if not condition or not condition.strip():
        return True
    return bool(_Parser(condition, lambda name: channel_value(name, io_store)).parse())


@contextlib.contextmanager
def local_conditions() -> Iterator[None]:
    """While active, kfp.local evaluates task conditions with `evaluate_condition`."""
    try:
        from kfp.local.orchestrator import enhanced_dag_orchestrator
    except ImportError:  # a kfp without it has its own (fixed) condition handling
        yield
        return
    evaluator = getattr(enhanced_dag_orchestrator, "ConditionEvaluator", None)
    original = vars(evaluator).get("evaluate_condition") if evaluator else None
    if original is None:  # not the layout this works around
        yield
        return
    evaluator.evaluate_condition = staticmethod(evaluate_condition)
    try:
        yield
    finally:
        evaluator.evaluate_condition = original
