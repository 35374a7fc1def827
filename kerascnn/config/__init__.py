"""What a user can choose, checked before Keras starts: the run
configuration (`options.FitConfig`), the choices (`choices`), the
architecture families (`families`), and the readers of typed values
(`readers`). The bottom layer: no Keras, no other kerascnn package but
`kerascnn.errors`."""
