"""Optimizers by name (`optimizers`) and the learning-rate schedules
(`schedules`), as Keras objects a saved model carries. Imports `config`."""
