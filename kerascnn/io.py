"""Files a run writes, always atomically: a temporary file in the same
folder, renamed into place, so that a failed or interrupted run never leaves
a half-written file or replaces a good one."""

import csv
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KerasCNNError(f"cannot create output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise KerasCNNError(f"output folder {path} is not writable")
    return path


def _atomic(path, write, suffix=""):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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


def checkpoint_path(model_path, kind):
    """checkpoint_path("x/lenet.keras", "best") is x/lenet.best.keras."""
    return sidecar(model_path, f"{kind}{MODEL_SUFFIX}")


def save_model(model, path, state=None):
    """model.save through a temporary .keras file renamed into place.

    `state` (JSON-able), if given, goes into the same zip archive as the
    entry STATE_ENTRY, which Keras ignores when loading: model and training
    state are then replaced together or not at all.
    """
    def write(tmp):
        model.save(tmp)
        if state is not None:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(STATE_ENTRY, json.dumps(state, default=_jsonable))
    return _atomic(path, write, suffix=MODEL_SUFFIX)


def read_state(path):
    """The training state stored in a checkpoint by save_model, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            if STATE_ENTRY not in z.namelist():
                return None
            return json.loads(z.read(STATE_ENTRY))
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise KerasCNNError(f"cannot read the training state in {path}: {e}") from None


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


def load_model(path):
    """Load a .keras model in Keras' safe mode, with one clear error."""
    path = Path(path)
    if not path.is_file():
        raise KerasCNNError(f"no model file at {path}")
    if path.suffix != MODEL_SUFFIX:
        raise KerasCNNError(f"{path} is not a .keras model file")
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for a bad file
        raise KerasCNNError(f"cannot load {path} as a Keras model: {str(e).splitlines()[0]}") from None


def newest_model(folder):
    """The most recently written .keras file in `folder`."""
    folder = Path(folder)
    models = [p for p in folder.glob(f"*{MODEL_SUFFIX}") if not p.name.startswith(".")] if folder.is_dir() else []
    if not models:
        raise KerasCNNError(f"no .keras model in {folder}/; train one with `kerascnn fit` or pass --model PATH")
    return max(models, key=lambda p: p.stat().st_mtime)
