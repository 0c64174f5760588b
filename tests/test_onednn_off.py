"""The shared oneDNN-off child (components/core/onednn_off.py): one TensorFlow start for
every model a process verifies, the same outputs as running the model here, and a
failure or a dead child that fails one request, never the next. Real child processes
and a real SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

from components.core.onednn_off import OneDnnOffChild
from components.core.serving_session import run_signatures
from components.core.verify import Reference


@pytest.fixture(scope="module")
def child():
    started = OneDnnOffChild()
    yield started
    started.close()


def test_one_child_serves_every_model_and_gives_the_outputs_run_here(child,
                                                                      two_signature_model):
    inputs = Reference(two_signature_model, num_examples=8).inputs
    here = run_signatures(two_signature_model, inputs)
    first = child.run(two_signature_model, inputs)
    pid = child._process.pid
    again = child.run(two_signature_model, inputs)
    assert child._process.pid == pid  # TensorFlow started once
    for name, batches in here.items():
        for mine, theirs in zip(batches, first[name], strict=True):
            for key, value in mine.items():
                np.testing.assert_allclose(theirs[key], value, rtol=1e-5, atol=1e-6)
    assert again.keys() == first.keys()


def test_a_failing_model_fails_its_request_and_the_child_serves_the_next(
        child, two_signature_model, tmp_path):
    inputs = Reference(two_signature_model, num_examples=4).inputs
    with pytest.raises(RuntimeError, match="missing"):
        child.run(tmp_path / "missing", inputs)
    assert child.run(two_signature_model, inputs).keys() == inputs.keys()


@pytest.mark.e2e  # two more TensorFlow starts
def test_a_child_that_dies_fails_its_request_with_its_last_line_and_the_next_starts_afresh(
        child, two_signature_model):
    inputs = Reference(two_signature_model, num_examples=4).inputs
    child.run(two_signature_model, inputs)
    dying = child._process
    dying.stdin.write("not a request\n")  # the child's loop dies on it, mid-request
    with pytest.raises(RuntimeError, match="JSONDecodeError"):
        child.run(two_signature_model, inputs)
    assert child.run(two_signature_model, inputs).keys() == inputs.keys()
    assert child._process.pid != dying.pid
    child._process.kill()  # found dead before a request: started afresh, nothing fails
    child._process.wait()
    assert child.run(two_signature_model, inputs).keys() == inputs.keys()
