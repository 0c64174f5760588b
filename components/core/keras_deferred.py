"""TensorFlow without Keras in processes that only load and run models as TF Serving does
(the benchmark's workers, the oneDNN-off child, the KFP steps but quantize, every `servopt`
command but demo; docs/cli.md): Keras is imported only if a model needs it.

`import tensorflow` (TF 2.21, tensorflow/__init__.py) ends with an eager
`importlib.import_module("keras.src.optimizers")` inside `try/except ImportError` ("so that
any function/method that needs to happen at load time will trigger, eg registration of
optimizers in the SavedModel registry", b/196254385). That loads all of Keras 3, and
scikit-learn through its wrappers. Measured on 2 idle AMD EPYC cores: `import tensorflow`
takes 13.7 s and leaves 877 MB resident; with Keras deferred, 7.6 s and 694 MB. Loading a
SavedModel with the TF1 loader (serving_session, as TF Serving's C++ loader does) and
running TFLite never touch Keras; TF Serving links no Keras at all.

`defer_keras()` (before TensorFlow is imported) makes that one eager import fail, which
TensorFlow ignores; `allow_keras()` undoes it for a package that uses `tf.keras` at import
(TF Text does: safety/libraries.load calls it first), and `tf.keras` then loads Keras as
usual. This module imports nothing heavy.
"""

from __future__ import annotations

import sys

# The module tensorflow/__init__.py imports eagerly; None in sys.modules makes that import
# raise ModuleNotFoundError without importing its parent packages.
EAGER_KERAS_IMPORT = "keras.src.optimizers"


def defer_keras() -> None:
    """Keep `import tensorflow` from loading Keras in this process (a no-op once
    TensorFlow is loaded)."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault(EAGER_KERAS_IMPORT, None)


def allow_keras() -> None:
    """Let Keras load again (on the next `tf.keras` or `import keras`)."""
    if EAGER_KERAS_IMPORT in sys.modules and sys.modules[EAGER_KERAS_IMPORT] is None:
        del sys.modules[EAGER_KERAS_IMPORT]
