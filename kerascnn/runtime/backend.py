"""Backend set-up that must happen before Keras (or JAX) starts.

JAX compiles every new shape with XLA, including each weight initializer
while a model is built (about a second each on a CPU), so a fresh process
spends most of `kerascnn evaluate` or `visualize` recompiling what `fit`
compiled a minute ago. JAX's persistent compilation cache keeps those
programs on disk; `use_compilation_cache` turns it on, and the CLI calls it.
"""

import contextlib
import os
import sys
import tempfile
from pathlib import Path

MIN_COMPILE_SECONDS = 0.1


def cache_dir():
    """`$KERASCNN_CACHE_DIR`, else `$XDG_CACHE_HOME/kerascnn`, else
    `~/.cache/kerascnn`."""
    if os.environ.get("KERASCNN_CACHE_DIR"):
        return Path(os.environ["KERASCNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kerascnn"


def use_compilation_cache(directory=None):
    """Keep JAX's compiled programs in `directory` (default
    `cache_dir() / "jax"`), each that took 0.1 s or more to compile (JAX's
    default, 1 s, misses the weight initializers; caching every tiny eager
    op costs more than it saves). The folder is not pruned: delete it at
    will. Settings the user made through
    JAX's own variables (JAX_COMPILATION_CACHE_DIR, ...) win;
    JAX_ENABLE_COMPILATION_CACHE=false turns the cache off. Harmless on the
    other backends. Call it before the first model is built: JAX decides
    whether to use the cache at its first compilation. Returns the directory
    in effect (None when off)."""
    defaults = {
        "JAX_COMPILATION_CACHE_DIR": str(directory or cache_dir() / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(MIN_COMPILE_SECONDS),
    }
    if "jax" in sys.modules:  # too late for the environment: JAX's config, unless the user set it
        import jax

        if jax.config.jax_compilation_cache_dir is None:
            jax.config.update("jax_compilation_cache_dir", defaults["JAX_COMPILATION_CACHE_DIR"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        directory, enabled = jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache
    else:
        for name, value in defaults.items():
            os.environ.setdefault(name, value)
        directory = os.environ["JAX_COMPILATION_CACHE_DIR"]
        enabled = os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "true").lower() not in ("0", "false", "no", "off")
    return Path(directory) if enabled else None


DEBUG_ENV = "KERASCNN_DEBUG"


@contextlib.contextmanager
def stderr_aside():
    """Send everything written to file descriptor 2 (C++ logs included) to a
    temporary file for the block; yields a list that holds the text after."""
    sys.stderr.flush()
    saved = os.dup(2)
    kept = []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield kept
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept.append(tmp.read().decode(errors="replace"))


def start_quietly():
    """Import Keras (and, on the tensorflow backend, TensorFlow, querying its
    devices once), with the start-up lines TensorFlow's C++ core writes
    (absl, oneDNN, CUDA probes) kept aside: TF_CPP_MIN_LOG_LEVEL does not
    reach the ones written before absl starts. They are shown when the
    import fails, and always with $KERASCNN_DEBUG set (the CLI's --debug).
    On jax and torch TensorFlow is not imported."""
    if os.environ.get(DEBUG_ENV) or "tensorflow" in sys.modules:
        return
    try:
        with stderr_aside() as kept:
            import keras  # its backend starts here

            if keras.backend.backend() != "tensorflow":
                keep_tensorflow_unloaded()
                return
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
    except BaseException:
        sys.stderr.write("".join(kept))
        raise
    quiet_tensorflow()


def quiet_tensorflow():
    """TensorFlow's Python warnings (tf.function retracing when a study trains
    run after run in one process) are for TensorFlow's developers, not ours:
    errors only. Nothing on the other backends, where TensorFlow is not loaded."""
    if sys.modules.get("tensorflow") is not None:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")



class _IfLoaded:
    """True only while TensorFlow is loaded (see keep_tensorflow_unloaded)."""

    def __bool__(self):
        return sys.modules.get("tensorflow") is not None


def keep_tensorflow_unloaded():
    """On jax and torch, stop Keras from importing TensorFlow: before
    isinstance checks (saving a model) and seeding, Keras asks whether
    TensorFlow is available, which imports it whenever it is installed (a
    second or two, and its start-up lines on stderr). Answer yes only while
    it is loaded already: no object can be TensorFlow's before that, and a
    TensorFlow a user imports later is still seeded and recognized. Nothing
    on the tensorflow backend. Safe to call any number of times."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    try:
        from keras.src.utils.module_utils import tensorflow as lazy
    except ImportError:  # another Keras layout: Keras keeps its own behaviour
        return
    if getattr(lazy, "module", None) is None and getattr(lazy, "_available", False) is None:
        lazy._available = _IfLoaded()
