"""Import TensorFlow once, quietly. Every library module gets `tf` from here, and imports
it before any `tensorflow.*` module (ruff's isort section `tf-setup` keeps it first).

TensorFlow's C++ runtime writes to stderr at import and at its first look for a GPU,
before its log level applies: on a machine without CUDA, `cudart_stub ... Could not find
cuda drivers`, `failed call to cuInit`, the CPU-instructions banner, and on CPUs where
oneDNN is on (AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX: the default there) the oneDNN
banner. Both happen here, with stderr captured; known start-up noise is dropped, every
other line (a real warning) is written back, and on a failed import everything is shown.

TF_CPP_MIN_LOG_LEVEL does not hide these lines: TF 2.21 logs through absl, and absl
writes every message logged before `absl::InitializeLog()` (which TF never calls) to
stderr ("WARNING: All log messages before absl::InitializeLog() is called are written to
STDERR"). Measured: `TF_ENABLE_ONEDNN_OPTS=1 TF_CPP_MIN_LOG_LEVEL=3 python -c "import
tensorflow"` still prints the oneDNN banner (twice, seconds apart, both while `import tensorflow`
runs). Turning oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`, the banner's
own advice) would change what runs (bf16 needs oneDNN), so the line is filtered instead.
"""

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What every start-up on a CPU-only machine prints; nothing in it needs action.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    # tensorflow/core/util/port.cc, IsMklEnabled(): LOG(INFO) when
    # DefaultOneDnnPolicy() or TF_ENABLE_ONEDNN_OPTS turns oneDNN on. Only this INFO
    # line: its LOG(WARNING) for a malformed TF_ENABLE_ONEDNN_OPTS is still shown.
    r"|port\.cc:\d+\] oneDNN custom operations are on\. "
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    # tensorflow/lite/core/interpreter_builder.cc (TFLITE_LOG_PROD_ONCE, INFO) at the first
    # interpreter that applies the default XNNPACK delegate.
    r"|^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")


@contextlib.contextmanager
def quiet_stderr(replay_on_error: bool = True,
                 keep: Callable[[str], str] | None = None) -> Iterator[None]:
    """Captures what C++ code writes to stderr (fd 2); shows it only if the block fails
    and `replay_on_error` (callers that turn the error into a message pass False). On
    success, `keep` chooses what of the capture is still shown (default: nothing)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        shown = keep
        try:
            yield
        except BaseException:
            shown = (lambda text: text) if replay_on_error else None
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if shown is not None:
                capture.seek(0)
                sys.stderr.write(shown(capture.read().decode(errors="replace")))
                sys.stderr.flush()


def without_noise(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not STARTUP_NOISE.search(line))


def _import_tensorflow():
    if "tensorflow" not in sys.modules:
        with quiet_stderr(keep=without_noise):
            import tensorflow

            tensorflow.config.list_physical_devices("GPU")  # the CUDA probe, once, here
    return sys.modules["tensorflow"]


tf = _import_tensorflow()
tf.get_logger().setLevel("ERROR")

__all__ = ["STARTUP_NOISE", "quiet_stderr", "tf", "without_noise"]
