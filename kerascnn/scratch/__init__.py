"""LeNet-5 from scratch in NumPy, as the course report built it: layers with
forward and backward passes (kerascnn.scratch.layers), the model and its
loss (LeNet5), the Solver with SGD and Adam, and `kerascnn scratch --check`,
which checks every gradient against centred differences and against Keras.

Imports no Keras, TensorFlow, JAX or torch (the Keras check imports Keras
when it runs).
"""

from kerascnn.scratch.lenet5 import LeNet5
from kerascnn.scratch.solver import Solver, adam, sgd

__all__ = ["LeNet5", "Solver", "adam", "sgd"]
