"""kerascnn.runtime.backend: JAX's persistent compilation cache.

Keras 3 multi-backend: the core tests under jax and torch, and models
saved under one backend loading under the others with the same
predictions, batch-norm statistics and optimizer state.

Each backend runs in its own process (Keras picks its backend at import).
A backend whose package is not installed is skipped with the reason;
`pip install -e ".[test,jax,torch]"` (README) installs all three.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn.runtime import backend as kerascnn_backend
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
    assert kerascnn_backend.cache_dir() == tmp_path / "cache"
    clean_env.delenv("KERASCNN_CACHE_DIR")
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kerascnn_backend.cache_dir() == tmp_path / "xdg" / "kerascnn"
    clean_env.delenv("XDG_CACHE_HOME")
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert kerascnn_backend.cache_dir() == tmp_path / "home" / ".cache" / "kerascnn"


def test_sets_jax_defaults_before_jax_starts(clean_env, tmp_path):
    assert kerascnn_backend.use_compilation_cache() == tmp_path / "cache" / "jax"
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache" / "jax")
    assert float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == kerascnn_backend.MIN_COMPILE_SECONDS
    assert "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ  # eviction needs filelock and rescans the folder


def test_the_users_jax_settings_win(clean_env, tmp_path):
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    clean_env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    assert kerascnn_backend.use_compilation_cache() == tmp_path / "mine"
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"
    clean_env.setenv("JAX_ENABLE_COMPILATION_CACHE", "false")
    assert kerascnn_backend.use_compilation_cache() is None


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


BACKENDS = ("tensorflow", "jax", "torch")


def installed(backend):
    return importlib.util.find_spec(backend) is not None


def needs(backend):
    return pytest.mark.skipif(not installed(backend),
                              reason=f"{backend} is not installed (pip install -e .[{backend}])")


def run_under(backend, args, timeout=900):
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)


@pytest.mark.parametrize("backend", [pytest.param(b, marks=needs(b)) for b in ("jax", "torch")])
def test_core_tests_pass_under(backend):
    proc = run_under(backend, ["-m", "pytest", "-q", "-n", "0", "-m", "core", "-p", "no:cacheprovider", "tests"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


SAVE = textwrap.dedent("""
    import json, sys
    from kerascnn.runtime.backend import use_compilation_cache
    use_compilation_cache()  # as the CLI does; LOAD then reuses these programs under JAX
    import keras
    import numpy as np
    from kerascnn.runs import storage
    from kerascnn.models import ARCHS, build_model
    from kerascnn.training.plan import compile_model
    from kerascnn.config.tricks import Tricks

    def logits(model, x):  # inference mode; under JAX one compiled program (cached on disk) beats op by op
        if keras.backend.backend() == "jax":
            return model.predict(x, verbose=0)
        return keras.ops.convert_to_numpy(model(x, training=False))

    out = sys.argv[1]
    tiny = {"width": 0.125}
    dense = {"alexnet": {"dense_units": 32}, "vgg11": {"dense_units": 32}, "vgg16": {"dense_units": 32}}
    # "tricks": a LeNet compiled as a run with label smoothing and mixup is (one-hot labels, MixedAccuracy)
    for arch, spec in [*ARCHS.items(), ("tricks", ARCHS["lenet"])]:
        keras.utils.set_random_seed(0)
        options = {} if arch in ("lenet", "tricks") else {**tiny, **dense.get(arch, {})}
        if arch == "lenet":
            options = {"batchnorm": True}
        size = spec.min_size if spec.default_size else 28
        model = build_model(spec.name, input_shape=(size, size, 1), num_classes=5, **options)
        tricks = Tricks(label_smoothing=0.1, mixup=0.2) if arch == "tricks" else None
        compile_model(model, keras.optimizers.Adam(1e-3), tricks=tricks)  # as fit does: jit under JAX only
        rng = np.random.default_rng(0)
        x = rng.normal(size=(6, size, size, 1)).astype("float32")
        y = np.arange(6) % 5
        if tricks:
            y = np.eye(5, dtype="float32")[y]
        for _ in range(2):  # moves weights, batch-norm statistics and Adam's moments
            model.train_on_batch(x, y)
        storage.save_model(model, f"{out}/{arch}.keras")
        np.save(f"{out}/{arch}.x.npy", x)
        np.save(f"{out}/{arch}.logits.npy", logits(model, x))
        np.savez(f"{out}/{arch}.state.npz",
                 **{f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)},
                 **{f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
""")


LOAD = textwrap.dedent("""
    import json, sys
    from kerascnn.runtime.backend import use_compilation_cache
    use_compilation_cache()
    import keras
    import numpy as np
    from kerascnn.runs import storage
    from kerascnn.models import ARCHS

    def logits(model, x):  # inference mode; under JAX one compiled program (cached on disk) beats op by op
        if keras.backend.backend() == "jax":
            return model.predict(x, verbose=0)
        return keras.ops.convert_to_numpy(model(x, training=False))

    results = {}
    for source in sys.argv[1:]:
        for arch in [*ARCHS, "tricks"]:
            model = storage.load_model(f"{source}/{arch}.keras")  # in Keras' safe mode
            x = np.load(f"{source}/{arch}.x.npy")
            logits_now = logits(model, x)
            state = np.load(f"{source}/{arch}.state.npz")
            weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
            opt = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
            results[f"{source}|{arch}"] = {
                "logits": float(np.max(np.abs(logits_now - np.load(f"{source}/{arch}.logits.npy")))),
                "scale": float(np.max(np.abs(np.load(f"{source}/{arch}.logits.npy")))),
                "weights": max(float(np.max(np.abs(w - state[f"w{i}"]))) for i, w in enumerate(weights)),
                "n_weights": [len(weights), len([k for k in state.files if k.startswith("w")])],
                "optimizer": max(float(np.max(np.abs(np.asarray(v, dtype="float64") - state[f"o{i}"])))
                                 for i, v in enumerate(opt)),
                "n_optimizer": [len(opt), len([k for k in state.files if k.startswith("o")])],
                "compiled": [type(model.loss).__name__, model.loss.get_config().get("label_smoothing"),
                             [m if isinstance(m, str) else type(m).__name__ for m in model.metrics[-1]._user_metrics]],
            }
    print(json.dumps(results))
""")


def test_models_move_between_backends(tmp_path):
    available = [b for b in BACKENDS if installed(b)]
    if len(available) < 2:
        pytest.skip("only one Keras backend is installed (pip install -e .[jax,torch])")
    for backend in available:
        (tmp_path / backend).mkdir()
        proc = run_under(backend, ["-c", SAVE, str(tmp_path / backend)])
        assert proc.returncode == 0, f"saving under {backend}: {proc.stderr[-3000:]}"
    differences = {}
    for backend in available:
        sources = [str(tmp_path / b) for b in available if b != backend]
        proc = run_under(backend, ["-c", LOAD, *sources])
        assert proc.returncode == 0, f"loading under {backend}: {proc.stderr[-3000:]}"
        for key, r in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            source, arch = key.split("|")
            differences[(os.path.basename(source), backend, arch)] = r
    from kerascnn.models import ARCHS

    assert len(differences) == len(available) * (len(available) - 1) * (len(ARCHS) + 1)
    for (source, target, arch), r in differences.items():
        where = f"{arch} saved under {source}, loaded under {target}"
        # float32 arithmetic differs between backends' kernels in proportion to the logits' size
        assert r["logits"] < 1e-4 * max(1.0, r["scale"]), (where, r)
        assert r["n_weights"][0] == r["n_weights"][1] and r["weights"] == 0.0, (where, r)  # incl. BN statistics
        assert r["n_optimizer"][0] == r["n_optimizer"][1] and r["optimizer"] == 0.0, (where, r)
        tricks = arch == "tricks"  # the loss and metric compiled are those the model was saved with
        assert r["compiled"] == (["CategoricalCrossentropy", 0.1, ["MixedAccuracy"]] if tricks else
                                 ["SparseCategoricalCrossentropy", None, ["accuracy"]]), (where, r)
    worst = max(r["logits"] for r in differences.values())
    print(f"largest cross-backend logit difference: {worst:.2e}; relative: "
          f"{max(r['logits'] / max(1.0, r['scale']) for r in differences.values()):.2e}")
    assert np.isfinite(worst)


BATCHES = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from kerascnn.training.plan import make_plan

    plan = make_plan("lenet", "digits", {"train_size": 100, "val_size": 0.2, "batch_size": 16, "epochs": 2,
                                         "seed": 5, "output": sys.argv[1]})
    loader = plan.loader("train")
    images, labels = [], []
    for batch in loader:  # both epochs, as fit reads them
        if loader.transform is None:  # tensorflow: the images as the model takes them
            x, y = batch
        else:  # jax, torch: uint8 and parameters, through the step's transform
            (x, params), y = batch
            x = keras.ops.convert_to_numpy(loader.transform(x, params, training=True))
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
    np.savez(f"{sys.argv[1]}/batches.npz", steps=loader.steps, sizes=[len(y) for y in labels],
             images=np.concatenate(images), labels=np.concatenate(labels))
""")


def test_every_backend_trains_on_the_same_batches_for_a_seed(tmp_path):
    """One epoch order (data.sampling.epoch_order) on every backend: with
    augmentation off, the same seed gives tensorflow, jax and torch the same
    batches, image for image, epoch after epoch."""
    available = [b for b in BACKENDS if installed(b)]
    if len(available) < 2:
        pytest.skip("only one Keras backend is installed (pip install -e .[jax,torch])")
    seen = {}
    for backend in available:
        (tmp_path / backend).mkdir()
        proc = run_under(backend, ["-c", BATCHES, str(tmp_path / backend)])
        assert proc.returncode == 0, f"under {backend}: {proc.stderr[-3000:]}"
        seen[backend] = np.load(tmp_path / backend / "batches.npz")
    first = seen[available[0]]
    n = len(first["labels"]) // 2  # the training images, seen once an epoch
    assert int(first["steps"]) == -(-n // 16) and first["sizes"][-1] == (n % 16 or 16)  # the last batch short
    assert not np.array_equal(first["labels"][:n], first["labels"][n:])  # each epoch in its own order
    for backend in available[1:]:
        batches = seen[backend]
        assert int(batches["steps"]) == int(first["steps"]), backend
        np.testing.assert_array_equal(batches["sizes"], first["sizes"], err_msg=backend)
        np.testing.assert_array_equal(batches["labels"], first["labels"], err_msg=backend)
        np.testing.assert_allclose(batches["images"], first["images"], atol=1e-5, err_msg=backend)


def test_stderr_aside_keeps_what_c_code_writes_and_restores_the_stream(capfd):
    with kerascnn_backend.stderr_aside() as kept:
        os.write(2, b"absl start-up line\n")
    os.write(2, b"after\n")
    assert kept == ["absl start-up line\n"]
    assert capfd.readouterr().err == "after\n"


def test_a_failing_start_shows_what_was_kept(monkeypatch, capfd):
    import builtins
    import sys

    monkeypatch.delenv(kerascnn_backend.DEBUG_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "tensorflow":
            os.write(2, b"libtensorflow.so: cannot open shared object file\n")
            raise ImportError("no tensorflow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ImportError):
        kerascnn_backend.start_quietly()
    assert "cannot open shared object file" in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param(b, marks=needs(b)) for b in BACKENDS])
def test_every_command_keeps_stderr_empty_on_success(backend, tmp_path):
    """What a user sees with stderr captured to a file: nothing they did not ask for
    (no absl, oneDNN, CUDA or XLA start-up lines), under each backend's own defaults."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    env["KERAS_BACKEND"] = backend
    model = str(tmp_path / "lenet.keras")
    commands = [("fit", "--dataset", "digits", "--epochs", "1", "--train-size", "128", "--output", str(tmp_path)),
                ("evaluate", model), ("visualize", "--model", model), ("compare", model, "--output", "c.png"),
                ("summary", "--arch", "mobilenet"), ("layers", "--model", model)]
    for args in commands:
        err = tmp_path / "stderr.txt"
        with open(err, "w") as f:
            proc = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], stdout=subprocess.DEVNULL,
                                  stderr=f, env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0 and err.read_text() == "", f"{args[0]} under {backend}: {err.read_text()}"
