"""What a fresh interpreter sees, asked once per session: three tests need a process where
nothing else was imported first, and TensorFlow takes seconds to import on two cores.

One child (FACTS_SCRIPT) defers Keras as the serving processes do
(components/core/keras_deferred.py), imports TensorFlow and checks that Keras stayed
out, reads TensorFlow's op registry, loads TF Text through the safety allowlist's
`libraries.load` (which allows Keras first: TF Text uses tf.keras at import), reads the
ops it added, and checks that tf.keras works. Readers:

- test_safety_allowlist: every op TensorFlow registers is classified by the table;
- test_text_models: the ops TF Text adds are exactly those its table classifies;
- test_keras_deferred: TensorFlow imports without Keras, and Keras loads for TF Text.

Deferring Keras cannot hide an op from the registry check: Keras registers no TensorFlow
ops, and if it ever did, loading it with TF Text would add them to TF Text's ops, which
must equal TF Text's table exactly.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FACTS_SCRIPT = """
import json, sys
from components.core.keras_deferred import defer_keras
defer_keras()
import tensorflow as tf
from components.core.safety.op_classes import registered_ops
keras_at_import = "keras.src" in sys.modules
tensorflow_ops = registered_ops()
from components.core.safety.libraries import TF_TEXT, load
text_load = load(TF_TEXT)
text_ops = {op: stateful for op, stateful in registered_ops().items()
            if op not in tensorflow_ops}
keras_works = tf.keras.layers.Dense(2)(tf.ones([1, 3])).shape == (1, 2)
print(json.dumps({"keras_at_import": keras_at_import, "tensorflow_ops": tensorflow_ops,
                  "text_load": text_load, "text_ops": text_ops,
                  "keras_works_after_text": bool(keras_works)}))
"""


@dataclass(frozen=True)
class FreshProcessFacts:
    keras_at_import: bool  # Keras was loaded by `import tensorflow` although deferred
    tensorflow_ops: dict[str, bool]  # TF's registry: op -> is_stateful
    text_load: str | None  # libraries.load(TF_TEXT): None, or why TF Text did not load
    text_ops: dict[str, bool]  # the ops loading TF Text added
    keras_works_after_text: bool


@functools.cache
def fresh_process_facts() -> FreshProcessFacts:
    done = subprocess.run([sys.executable, "-c", FACTS_SCRIPT], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return FreshProcessFacts(**json.loads(done.stdout.strip().splitlines()[-1]))
