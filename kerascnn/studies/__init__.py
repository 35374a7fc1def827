"""Studies: variants of a run over seeds (`study`), the course reports'
presets (`presets`), and the reports of a study or a run (`report`).
Imports `analysis` and below."""
