"""Files a run writes, always atomically: a temporary file in the same
folder, renamed into place, so that a failed or interrupted run never leaves
a half-written file or replaces a good one.

And model files read safely (load_model): the archive checked before Keras
reads it, Keras' safe mode on, code in a model file run only when asked."""

import copy
import csv
import glob
import io
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no locks, so temporary files a killed save left stay
    fcntl = None

from kerascnn.errors import KerasCNNError

MODEL_SUFFIX = ".keras"


def sidecar(model_path, kind):
    """The file beside a model: sidecar("x/lenet.keras", "run.json") is
    x/lenet.run.json."""
    model_path = Path(model_path)
    stem = model_path.name[: -len(MODEL_SUFFIX)] if model_path.name.endswith(MODEL_SUFFIX) else model_path.stem
    return model_path.with_name(f"{stem}.{kind}")


def ensure_dir(path):
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KerasCNNError(f"output folder {path} is a file; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KerasCNNError(f"cannot create output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise KerasCNNError(f"output folder {path} is not writable")
    return path


def check_writable(path):
    """Raise unless folder `path` exists and is writable or could be created,
    without creating anything (a run creates its folder at its first save)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor or "."))
    if existing == path and not path.is_dir():
        raise KerasCNNError(f"output folder {path} is a file; choose a folder")
    if not existing.is_dir():
        raise KerasCNNError(f"cannot create output folder {path}: {existing} is a file")
    try:  # a real probe: permission bits say little to root, or on a read-only or special file system
        tempfile.TemporaryDirectory(prefix=".kerascnn-probe-", dir=existing).cleanup()
    except OSError as e:
        raise KerasCNNError(f"output folder {path} is not writable ({e.strerror})" if existing == path else
                            f"cannot create output folder {path}: cannot write in {existing} ({e.strerror})") from None
    return path


def _atomic(path, write, suffix=""):
    """write(tmp) into `.<name>.XXXX.tmp<suffix>` beside `path`, flushed to
    disk, then renamed onto `path`: a process killed at any moment leaves the
    old file or the new one. The flush (fsync) keeps that true after a power
    loss too (the rename itself may then be lost: the old file stays). The
    temporary file is locked while written, so that the next save of `path`
    removes only the ones a killed process left."""
    path = Path(path)
    _remove_stale(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    if fcntl:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:  # Windows renames no file that is open
        os.close(fd)
        fd = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if fd is not None:
            os.close(fd)
    return path


def _fsync(path):
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(path, suffix):
    """Remove the temporary files of `path` that no save under way holds
    locked: those of a killed process."""
    if fcntl is None:
        return
    for tmp in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp{suffix}")):
        try:
            fd = os.open(tmp, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.remove(tmp)
        except OSError:
            pass  # a save under way holds it, or another save removed it first
        finally:
            os.close(fd)


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic(path, write)


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_csv(path, rows):
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


STATE_ENTRY = "kerascnn_state.json"


def save_model(model, path, state=None):
    """model.save through a temporary .keras file renamed into place.

    `state` (JSON-able), if given, goes into the same zip archive as the
    entry STATE_ENTRY, which Keras ignores when loading: model and training
    state are then replaced together or not at all.
    """
    from kerascnn.runtime.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # Keras' serialization would import it on jax and torch

    def write(tmp):
        model.save(tmp)
        if state is not None:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(STATE_ENTRY, json.dumps(state, default=_jsonable))
    return _atomic(path, write, suffix=MODEL_SUFFIX)


def copy_file(source, path):
    """A copy of `source` at `path`, written as atomically as save_model."""
    import shutil

    return _atomic(path, lambda tmp: shutil.copyfile(source, tmp), suffix=Path(path).suffix)


def read_state(path):
    """The training state stored in a checkpoint by save_model, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            if STATE_ENTRY not in z.namelist():
                return None
            state = json.loads(z.read(STATE_ENTRY))
    except _ZIP_ERRORS + (RecursionError,) as e:
        raise KerasCNNError(f"cannot read the training state in {path}: {_reason(e)}") from None
    if not isinstance(state, dict):
        raise KerasCNNError(f"cannot read the training state in {path}: not a JSON object")
    return state


def update_state(path, **changes):
    """Rewrite the state entry of a checkpoint (atomically) with `changes`."""
    state = read_state(path) or {}
    state.update(changes)

    def write(tmp):
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename != STATE_ENTRY:
                    dst.writestr(item, src.read(item.filename))
            dst.writestr(STATE_ENTRY, json.dumps(state, default=_jsonable))
    return _atomic(path, write, suffix=MODEL_SUFFIX)


def write_npz(path, arrays):
    """np.savez_compressed, atomically."""
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return _atomic(path, write, suffix=".npz")


def save_figure(fig, path):
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), suffix=".png")
    return Path(path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- reading a .keras file safely

MODEL_ENTRIES = ("config.json", "metadata.json", "model.weights.h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Unpacked size of a whole archive: a VGG-16 checkpoint with Adam's moments is ~1.6 GB.
MAX_MODEL_BYTES = 4 * 1024 ** 3
MAX_JSON_BYTES = 64 * 1024 ** 2  # config.json of the largest model here: ~0.1 MB
# Keras' safe mode could be bypassed by a crafted config.json before 3.11:
# CVE-2025-1550 (any module's function; fixed in 3.9), CVE-2025-8747
# (keras.utils.get_file) and CVE-2025-9906 (keras.config.enable_unsafe_deserialization).
SAFE_KERAS = (3, 11)
CODE_CLASSES = ("Lambda", "__lambda__")  # configs that carry Python code
# What a damaged zip makes zipfile raise, besides BadZipFile.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error,
               NotImplementedError, RuntimeError, struct.error, OverflowError)


def model_file(path):
    """`path` as a Path when it names a .keras file; else the error saying what it is."""
    path = Path(path)
    if path.is_dir():
        models = sorted(p.name for p in path.glob(f"*{MODEL_SUFFIX}") if not p.name.startswith("."))
        hint = f"pass one of its models: {', '.join(models[:4])}{', ...' if len(models) > 4 else ''}" \
            if models else "it holds no .keras model"
        raise KerasCNNError(f"{path} is a folder, not a model file; {hint}")
    if not path.exists():
        raise KerasCNNError(f"no model file at {path}")
    if not path.is_file():
        raise KerasCNNError(f"{path} is not a regular file; pass a .keras model file")
    if path.suffix in (".h5", ".hdf5"):
        raise KerasCNNError(f"{path} is not a .keras model file: the legacy HDF5 format is not loaded, "
                            f"Keras cannot load it safely; save the model again as .keras")
    if path.suffix != MODEL_SUFFIX:
        raise KerasCNNError(f"{path} is not a .keras model file")
    return path


def check_archive(path):
    """Check a .keras file before Keras reads it (Keras hands its weights to
    h5py unchecked) and return its parsed config.json: a zip archive whose
    entries' CRCs verify, unpacking to at most MAX_MODEL_BYTES, holding
    config.json (JSON), metadata.json (JSON) and model.weights.h5 (HDF5)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise KerasCNNError(f"cannot read {path}: {e.strerror}") from None
    if not head:
        raise KerasCNNError(f"{path} is empty; save or copy the model again")
    if not head.startswith(b"PK"):
        raise KerasCNNError(f"{path} is not a Keras model file: a .keras file is a zip archive, this is not one")
    try:
        with zipfile.ZipFile(path) as z:
            return _check_entries(path, z)
    except _ZIP_ERRORS + (RecursionError,) as e:
        detail = "" if str(e) == "File is not a zip file" else f" ({_reason(e)})"
        raise KerasCNNError(f"{path} is truncated or damaged: a zip archive whose end is missing or "
                            f"broken{detail}; save or copy the model again") from None


def _check_entries(path, z):
    def bad(reason):
        return KerasCNNError(f"{path} is not a usable Keras model: {reason}; save or copy it again")

    infos = z.infolist()
    names = [i.filename for i in infos]
    outside = [n for n in names if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/")]
    if outside:
        raise bad(f"its entry {outside[0]!r} points outside the archive")
    missing = [n for n in MODEL_ENTRIES if n not in names]
    if missing:
        raise bad(f"it lacks {', '.join(missing)}")
    total = sum(i.file_size for i in infos)
    if total > MAX_MODEL_BYTES:
        raise bad(f"it would unpack to {_size(total)}, more than the {_size(MAX_MODEL_BYTES)} any model "
                  f"here needs (a zip bomb?)")
    if any(z.getinfo(n).file_size > MAX_JSON_BYTES for n in MODEL_ENTRIES[:2]):
        raise bad("its config.json or metadata.json is far larger than any model's")
    corrupt = z.testzip()
    if corrupt is not None:
        raise bad(f"its entry {corrupt} is corrupt (its CRC does not match)")
    config = {}
    for name in MODEL_ENTRIES[:2]:
        try:
            config[name] = json.loads(z.read(name))
        except (ValueError, RecursionError) as e:
            raise bad(f"its {name} is not valid JSON ({_reason(e)})") from None
        if not isinstance(config[name], dict):
            raise bad(f"its {name} is not a JSON object")
    with z.open(MODEL_ENTRIES[2]) as f:
        if f.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise bad(f"its {MODEL_ENTRIES[2]} is not an HDF5 file")
    return config["config.json"]


def _size(n):
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def check_keras(version=None):
    """Refuse a Keras whose safe mode a crafted file can bypass (see SAFE_KERAS)."""
    if version is None:
        import keras

        version = keras.__version__
    if tuple(int(n) for n in re.findall(r"\d+", version)[:2]) < SAFE_KERAS:
        raise KerasCNNError(f"Keras {version} is installed, but loading a model file safely needs Keras "
                            f"{'.'.join(map(str, SAFE_KERAS))} or later: earlier versions let a crafted .keras "
                            f"file run code (CVE-2025-1550, CVE-2025-8747, CVE-2025-9906); "
                            f"upgrade with: pip install -U 'keras>={'.'.join(map(str, SAFE_KERAS))}'")


def code_in(config):
    """The parts of a model config that carry Python code (Lambda layers,
    lambda functions), as short descriptions."""
    found, todo = [], [config]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("class_name") in CODE_CLASSES:
                inner = node.get("config")
                name = inner.get("name") if isinstance(inner, dict) else None
                found.append(f"Lambda layer {name!r}" if node["class_name"] == "Lambda" and name
                             else "a Python lambda")
                continue  # its function is the same code
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def _holds_code(path, what):
    from kerascnn.config.spelling import spell_set

    return (f"{path} holds Python code ({what}), which safe loading never runs; if you trust the file, "
            f"load it with {spell_set('unsafe')}")


def load_model(path, unsafe=False):
    """Load a .keras model, checked first (model_file, check_archive,
    check_keras), in Keras' safe mode: a model holding code (a Lambda layer)
    is refused unless `unsafe`. Whatever is wrong is one KerasCNNError."""
    from kerascnn.runtime.backend import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()  # Keras' deserialization would import it on jax and torch
    path = model_file(path)
    config = check_archive(path)
    code = code_in(config)
    if code and not unsafe:
        raise KerasCNNError(_holds_code(path, ", ".join(code[:3])))
    import keras

    import kerascnn.optim.schedules  # noqa: F401 - registers the learning-rate schedules an optimizer may hold
    from kerascnn.data.tricks import mixed_accuracy_metric

    mixed_accuracy_metric()  # registers the accuracy a run with mixed labels compiled with

    check_keras(keras.__version__)
    try:
        check_sizes(path, config, unsafe)
        model = keras.saving.load_model(path, safe_mode=not unsafe)
    except KerasCNNError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the checked file still makes Keras raise
        raise KerasCNNError(_load_failure(path, e, config)) from e  # chained: --debug shows Keras' traceback
    model.steps_per_execution = 1  # as trained on tensorflow; torch refuses more (fit sets its own)
    return model


def check_sizes(path, config, unsafe=False):
    """Refuse a config that asks for far more weights than the archive's
    model.weights.h5 holds, before Keras allocates them: the model is built
    first in a stateless scope, where Keras only notes its variables."""
    # global_state holds Keras' list of the variables it noted, put back after
    import keras
    from keras.src.backend.common import global_state

    with zipfile.ZipFile(path) as z:
        stored = z.getinfo(MODEL_ENTRIES[2]).file_size
    noted = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            dry = {**copy.deepcopy(config), "compile_config": None}  # Keras edits the config it reads
            model = keras.saving.deserialize_keras_object(dry, safe_mode=not unsafe)
        needed = sum(math.prod(v.shape) * _itemsize(v.dtype) for v in model.variables)
    finally:
        global_state.set_global_attribute("uninitialized_variables", noted)
    if needed > 2 * stored + 16 * 1024 ** 2:
        raise KerasCNNError(f"{path} is not a usable Keras model: its config.json asks for {_size(needed)} of "
                            f"weights, its model.weights.h5 holds {_size(stored)}; save or copy it again")


def _itemsize(dtype):
    bits = re.search(r"\d+", str(dtype))
    return max(1, int(bits[0]) // 8) if bits else 1


def _reason(e):
    """The innermost message of a (Keras) exception, on one line, without the configs Keras appends."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).rsplit("Exception encountered: ", 1)[-1]
    text = re.split(r"\s*(?:Full object config:|config=)", text, maxsplit=1)[0]
    line = " ".join(text.split()) or type(e).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _load_failure(path, e, config):
    reason = _reason(e)
    unknown = re.search(r"Could not locate (class|function) '([^']+)'", reason)
    if unknown:
        module = _module_of(config, unknown[2])
        origin = f" (from {module})" if module and module not in ("builtins", "__main__") else ""
        return (f"{path} needs the {unknown[1]} {unknown[2]!r}{origin}, which is neither part of Keras nor "
                f"registered: it was saved with custom code, which must be imported (and registered with "
                f"@keras.saving.register_keras_serializable) to load it")
    if "safe_mode=False" in reason:
        return _holds_code(path, "a lambda")
    refused = re.search(r"Cannot deserialize `([^`]+)`|deserialize '([^']+)' because it is not a KerasSaveable",
                        reason)
    if refused:
        return (f"{path} asks to call {refused[1] or refused[2]} while loading, which no model needs "
                f"(a crafted file?); refused")
    return f"cannot load {path} as a Keras model: {reason}"


def _module_of(config, name):
    """The module a config says the class or function `name` comes from."""
    todo = [config]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if name in (node.get("class_name"), node.get("config")) and isinstance(node.get("module"), str):
                return node["module"]
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return None


def newest_model(folder):
    """The most recently written .keras file in `folder`."""
    folder = Path(folder)
    models = [p for p in folder.glob(f"*{MODEL_SUFFIX}") if not p.name.startswith(".")] if folder.is_dir() else []
    if not models:
        raise KerasCNNError(f"no .keras model in {folder}/; train one with `kerascnn fit` or pass --model PATH")
    return max(models, key=lambda p: p.stat().st_mtime)
