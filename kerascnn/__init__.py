"""kerascnn: the classic CNNs with Keras 3, from LeNet to MobileNet.

    from kerascnn import build_lenet, load_dataset, fit, evaluate, visualize

Names are imported on first use so that importing kerascnn (and running
`kerascnn --help`) does not start TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "KerasCNNError": "kerascnn.errors",
    "FitConfig": "kerascnn.config.options",
    "build_lenet": "kerascnn.models",
    "build_model": "kerascnn.models",
    "ARCHS": "kerascnn.models",
    "load_dataset": "kerascnn.data.datasets",
    "make_pipeline": "kerascnn.data.loader",
    "fit": "kerascnn.training.fit",
    "lr_find": "kerascnn.training.lr_finder",
    "Run": "kerascnn.runs.saved",
    "evaluate": "kerascnn.analysis.evaluation",
    "visualize": "kerascnn.analysis.visualization",
    "compare_runs": "kerascnn.analysis.visualization",
    "explain": "kerascnn.analysis.explanation",
    "predict": "kerascnn.analysis.prediction",
    "show_batch": "kerascnn.analysis.preview",
    "parameter_counts": "kerascnn.models.summary",
    "start_quietly": "kerascnn.runtime.backend",  # a notebook's first cell: Keras without TensorFlow's C++ start-up lines
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerascnn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
