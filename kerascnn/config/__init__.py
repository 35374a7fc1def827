"""What a user can choose, checked before Keras starts: the run
configuration (`options.FitConfig`), the choices and family defaults
(`choices`), and the readers of typed values (`readers`). The bottom layer:
no Keras, no other kerascnn package but `kerascnn.errors`."""
