"""A run's files: atomic writes and safe model loading (`storage`), the
names of a run's and a study's files and their records (`files`), and the
saved run every reading command opens (`saved.Run`). Imports `data`,
`models`, `optim`, `runtime` and `config`."""
