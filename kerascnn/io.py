"""Files a run writes, always atomically: a temporary file in the same
folder, renamed into place, so that a failed or interrupted run never leaves
a half-written file or replaces a good one."""

import csv
import io
import json
import os
import tempfile
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


def save_model(model, path):
    """model.save through a temporary .keras file renamed into place."""
    return _atomic(path, model.save, suffix=MODEL_SUFFIX)


def save_figure(fig, path):
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), suffix=".png")
    return Path(path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_model(path):
    """Load a .keras model in Keras' safe mode, with one clear error."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise KerasCNNError(f"no model file at {path}")
    if path.suffix != MODEL_SUFFIX:
        raise KerasCNNError(f"{path} is not a .keras model file")
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
