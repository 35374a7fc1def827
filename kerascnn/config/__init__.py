"""What a user can choose, checked before Keras starts: the run
configuration (`options.FitConfig`), how an option is named to the user
(`spelling`), the defaults it takes (`defaults`), the choices (`choices`),
the architecture families (`families`), the training tricks (`tricks`) and
the readers of typed values (`readers`). The bottom layer: no Keras, no
other kerascnn package but `kerascnn.errors`."""
