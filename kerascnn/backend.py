"""Backend set-up that must happen before Keras (or JAX) starts.

JAX compiles every new shape with XLA, including each weight initializer
while a model is built (about a second each on a CPU), so a fresh process
spends most of `kerascnn evaluate` or `visualize` recompiling what `fit`
compiled a minute ago. JAX's persistent compilation cache keeps those
programs on disk; `use_compilation_cache` turns it on, and the CLI calls it.
"""

import os
import sys
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
