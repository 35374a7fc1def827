"""Training: a run's plan (`plan`), `fit` (`fit`), its callbacks and per-step
log (`callbacks`, `steplog`), the model that trains on the jax/torch input
path (`trainer`), the native torch step (`torch_graph`, `torch_native`) and
the learning-rate finder (`lr_finder`). Imports `runs` and below."""
