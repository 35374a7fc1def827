"""kerascnn.backend: JAX's persistent compilation cache."""

import importlib.util
import os
import subprocess
import sys

import pytest

from kerascnn import backend
from tests.conftest import REPO

JAX_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                 "JAX_ENABLE_COMPILATION_CACHE")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No JAX cache variables, JAX not imported (as in a fresh CLI process)."""
    for name in JAX_VARIABLES + ("XDG_CACHE_HOME",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    monkeypatch.setenv("KERASCNN_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def test_cache_dir_follows_the_environment(clean_env, tmp_path):
    assert backend.cache_dir() == tmp_path / "cache"
    clean_env.delenv("KERASCNN_CACHE_DIR")
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backend.cache_dir() == tmp_path / "xdg" / "kerascnn"
    clean_env.delenv("XDG_CACHE_HOME")
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert backend.cache_dir() == tmp_path / "home" / ".cache" / "kerascnn"


def test_sets_jax_defaults_before_jax_starts(clean_env, tmp_path):
    assert backend.use_compilation_cache() == tmp_path / "cache" / "jax"
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache" / "jax")
    assert float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == backend.MIN_COMPILE_SECONDS
    assert "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ  # eviction needs filelock and rescans the folder


def test_the_users_jax_settings_win(clean_env, tmp_path):
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    clean_env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    assert backend.use_compilation_cache() == tmp_path / "mine"
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"
    clean_env.setenv("JAX_ENABLE_COMPILATION_CACHE", "false")
    assert backend.use_compilation_cache() is None


def run_cli(args, env_update):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    for name in JAX_VARIABLES:
        env.pop(name, None)
    env.update(env_update)
    return subprocess.run([sys.executable, "cli.py", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install -e .[jax])")
def test_cli_under_jax_fills_the_cache_and_can_be_told_not_to(tmp_path):
    args = ["summary", "--backend", "jax", "--arch", "lenet"]  # builds the model: initializers compile
    proc = run_cli(args, {"KERASCNN_CACHE_DIR": str(tmp_path / "on")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "on" / "jax").iterdir())) > 0

    proc = run_cli(args, {"KERASCNN_CACHE_DIR": str(tmp_path / "off"), "JAX_ENABLE_COMPILATION_CACHE": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "off" / "jax").exists() or not any((tmp_path / "off" / "jax").iterdir())
