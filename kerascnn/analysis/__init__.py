"""What a saved run shows: test figures (`evaluation`), its kernels, feature
maps and curves (`visualization`), where its decisions come from
(`explanation`), its answers on new images (`prediction`), and a training
batch as the model receives it (`preview`). Imports `training` and below."""
