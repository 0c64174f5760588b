"""Import TensorFlow once, quietly. Every library module gets `tf` from here.

TensorFlow's C++ runtime logs to stderr at import, before its log level applies; the
import runs with stderr captured, and the capture is shown only if the import fails.
"""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_stderr(replay_on_error: bool = True) -> Iterator[None]:
    """Captures what C++ code writes to stderr (fd 2); shows it only if the block fails
    and `replay_on_error` (callers that turn the error into a message pass False)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            if replay_on_error:
                os.dup2(saved, 2)
                capture.seek(0)
                sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_tensorflow():
    if "tensorflow" not in sys.modules:
        with quiet_stderr():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


tf = _import_tensorflow()
tf.get_logger().setLevel("ERROR")

__all__ = ["tf"]
