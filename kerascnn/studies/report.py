"""A study's results (its table, figures and report.html), and the report
of a single run.

A study folder (`kerascnn.runs.files.StudyFolder`) holds `study.json` (the study:
its baseline, its variants, each with the options it changes, its seeds and
its runs) and one ordinary run per variant and seed in `runs/<slug>-s<seed>/`.
A run is done when its final save completed, failed when its last attempt
wrote `failed.json`, pending otherwise (an interrupted run is pending: the
next `kerascnn study` finishes it). The results merge whatever is there, so a
study still running, or spread over machines, reports what has finished.
"""

import base64
import dataclasses
import html
from io import BytesIO
from pathlib import Path

from kerascnn import plots

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from kerascnn.runs.saved import Run
from kerascnn.runs.files import CHECKPOINT, StudyFolder

STD_TEXT = "sample std over seeds (ddof=1)"


@dataclasses.dataclass
class StudyVariant:
    """One variant's runs: done [(seed, Run)], failed [(seed, error)], pending [seed]."""
    label: str
    options: dict
    done: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    pending: list = dataclasses.field(default_factory=list)
    _facts: dict = None

    @property
    def accuracies(self):
        return [run.record["test_accuracy"] for _, run in self.done]

    def best(self):
        """(seed, Run) of the done run with the highest test accuracy."""
        return max(self.done, key=lambda done: done[1].record["test_accuracy"])

    def facts(self):
        """Parameter counts and first-layer kernels of its first done run (model_facts), loaded once."""
        if self._facts is None:
            self._facts = model_facts(self.done[0][1]) if self.done else {}
        return self._facts


def read_study(study_dir):
    """The study.json of `study_dir`, its outline checked."""
    return StudyFolder(study_dir).read()


def run_outcome(study_dir, entry):
    """("done", Run), ("failed", error) or ("pending", None): one run of
    study.json, by StudyFolder.run_status (an interrupted run is pending)."""
    files = StudyFolder(study_dir)
    status = files.run_status(entry["folder"], entry["name"])
    if status == "done":
        try:
            return "done", Run.load(files.run_files(entry["folder"], entry["name"]).model)
        except KerasCNNError:
            pass  # damaged after it was saved: the runner cannot tell either, so it shows as pending
    if status == "failed":
        return "failed", files.failure(entry["folder"])
    return "pending", None


def study_variants(study_dir):
    """(study, [StudyVariant]): study.json and its variants in its order, their runs in its order."""
    study = read_study(study_dir)
    variants = {v["label"]: StudyVariant(v["label"], v["options"]) for v in study["variants"]}
    for entry in study["runs"]:
        if entry["label"] not in variants:
            raise KerasCNNError(f"{StudyFolder(study_dir).record_path} is damaged: run {entry['folder']} is of no "
                                f"variant ({entry['label']!r})")
        status, found = run_outcome(study_dir, entry)
        variant, seed = variants[entry["label"]], entry["seed"]
        if status == "done":
            variant.done.append((seed, found))
        elif status == "failed":
            variant.failed.append((seed, found))
        else:
            variant.pending.append(seed)
    return study, list(variants.values())


def model_facts(run):
    """{"encoder", "head"}: parameter counts of the run's model, and
    "kernels": (images, layer, depthwise) of its first conv layer or None.
    The model is not kept: a study may hold many large ones."""
    from kerascnn.models.summary import parameter_counts
    from kerascnn.analysis.visualization import first_conv_layer, is_depthwise, kernel_images

    try:
        model = storage.load_model(run.model_path)
    except KerasCNNError as e:
        return {"error": str(e)}
    counts = parameter_counts(model)
    try:
        layer = model.get_layer(first_conv_layer(model))
        kernels = (kernel_images(layer), layer.name, is_depthwise(layer))
    except KerasCNNError:
        kernels = None
    return {"encoder": counts["encoder"]["total"], "head": counts["head"]["total"], "kernels": kernels}


def value_text(value):
    """An option's value as `--vary` takes it: [16, 32] as "16/32", True as "true"."""
    if isinstance(value, (list, tuple)):
        return "/".join(value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def option_text(options):
    """{"channels": [16, 32], "pool": "max"} as "channels=16/32, pool=max"; {} as "baseline"."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in options.items()) or "baseline"


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _epochs(runs):
    """The epochs the runs trained: 10, or "8-10" when early stopping made them differ."""
    counts = sorted({run.record.get("epochs_run") or len(run.history) for run in runs})
    return None if not counts else counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def variant_row(variant):
    """The table row of one variant (see study_rows)."""
    runs = [run for _, run in variant.done]
    accuracies = variant.accuracies
    mean, std = plots.seed_spread(accuracies) if accuracies else (None, None)
    facts = variant.facts()
    val_best = [max((r["val_accuracy"] for r in run.history if "val_accuracy" in r), default=None) for run in runs]
    per_epoch = [run.record.get("train_seconds", sum(r.get("seconds", 0) for r in run.history)) / len(run.history)
                 for run in runs]
    return {
        "label": variant.label, "differs": option_text(variant.options),
        "encoder_params": facts.get("encoder"), "head_params": facts.get("head"),
        "epochs": _epochs(runs), "seconds_per_epoch": _mean(per_epoch), "best_val_accuracy": _mean(val_best),
        "test_accuracy_mean": mean, "test_accuracy_std": std,
        "seeds": [seed for seed, _ in variant.done], "test_accuracy": accuracies,
        "per_seed": ", ".join(f"s{seed}: {acc:.4f}" for (seed, _), acc in zip(variant.done, accuracies)),
        "runs_done": len(runs), "runs_failed": len(variant.failed), "runs_pending": len(variant.pending),
        "errors": [f"s{seed}: {error}" for seed, error in variant.failed],
    }


def study_rows(study_dir):
    """One row (a dict of plain values) per variant of the study in
    `study_dir`, in study.json's order: label, differs (the options it
    changes, "baseline" for none), encoder_params and head_params (of its
    first done run's model), epochs, seconds_per_epoch, best_val_accuracy
    (means over its done runs), test_accuracy_mean, test_accuracy_std (the
    sample std, ddof=1; None under two seeds), seeds and test_accuracy (per
    done run, lists), per_seed (the same as text), runs_done, runs_failed,
    runs_pending and errors (of the failed runs). Values a variant has no
    finished run for are None."""
    return [variant_row(v) for v in study_variants(study_dir)[1]]


def study_note(rows):
    """The caution a table of `rows` needs: the best two variants by mean
    test accuracy differ by less than the larger of their stds (or their
    spread is unknown: one seed each); None when their difference stands."""
    ranked = sorted((r for r in rows if r["test_accuracy_mean"] is not None), key=lambda r: -r["test_accuracy_mean"])
    if len(ranked) < 2:
        return None
    first, second = ranked[:2]
    gap = first["test_accuracy_mean"] - second["test_accuracy_mean"]
    spreads = [r["test_accuracy_std"] for r in (first, second) if r["test_accuracy_std"] is not None]
    pair = f"The best two variants, {first['label']} ({_test_cell(first)}) and {second['label']} " \
           f"({_test_cell(second)}), differ by {gap:.4f}"
    if not spreads:
        return f"{pair} with one seed each: the spread over seeds is unknown, so this is not a result yet; " \
               f"run more seeds."
    if gap < max(spreads):
        return f"{pair}, less than the spread over seeds (std {max(spreads):.4f}): not a result."
    return None


def _test_cell(row):
    mean, std, n = row["test_accuracy_mean"], row["test_accuracy_std"], row["runs_done"]
    if mean is None:
        return "—"
    return f"{mean:.4f}{f' ± {std:.4f}' if std is not None else ''} ({n} seed{'s' * (n != 1)})"


def _number(value, digits):
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


TABLE = (("variant", lambda r: r["label"]), ("differs from baseline", lambda r: r["differs"]),
         ("encoder params", lambda r: _number(r["encoder_params"], 0)),
         ("head params", lambda r: _number(r["head_params"], 0)),
         ("epochs", lambda r: _number(r["epochs"], 0)),
         ("s/epoch", lambda r: _number(r["seconds_per_epoch"], 2)),
         ("best val acc (mean)", lambda r: _number(r["best_val_accuracy"], 4)),
         (f"test acc mean ± {STD_TEXT} (n seeds)", _test_cell),
         ("test acc per seed", lambda r: r["per_seed"] or "—"),
         ("runs done/failed/pending", lambda r: f"{r['runs_done']}/{r['runs_failed']}/{r['runs_pending']}"))


def results_markdown(study, rows, note=None):
    """results.md: the study's table in Markdown, the note, the failed runs' errors."""
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"# Study {study.get('name')}", "", _intro(study), "",
             line([name for name, _ in TABLE]), "|" + "|".join("---" for _ in TABLE) + "|"]
    lines += [line([cell(r) for _, cell in TABLE]) for r in rows]
    lines += ["", f"std: the {STD_TEXT}; none under two seeds."]
    lines += ["", f"**Note:** {note}"] if note else []
    errors = [f"- {r['label']} {e}" for r in rows for e in r["errors"]]
    lines += ["", "Failed runs:", *errors] if errors else []
    return "\n".join(lines) + "\n"


def _intro(study):
    baseline = option_text(study.get("baseline") or {}).replace("baseline", "defaults")
    preset = f"preset {study['preset']}; " if study.get("preset") else ""
    return f"{preset}baseline: {baseline}; seeds: {', '.join(map(str, study.get('seeds', [])))}"


def _csv_row(row):
    """A row with its lists as text, for results.csv."""
    joined = {"seeds": " ", "test_accuracy": " ", "errors": " | "}
    return {k: joined[k].join(map(str, v)) if k in joined else v for k, v in row.items()}


def write_results(study_dir):
    """Write the results of the study in `study_dir` there: results.csv,
    results.md, curves.png (mean curves per variant), accuracy.png (test
    accuracy of every seed, mean ± std) and report.html (all of it, one
    self-contained file). Returns the paths written."""
    return write_study_results(study_dir)[0]


def write_study_results(study_dir):
    """write_results, returning (paths written, study_rows) from one reading
    of the runs."""
    study_dir = Path(study_dir)
    study, variants = study_variants(study_dir)
    rows = [variant_row(v) for v in variants]
    note = study_note(rows)
    paths = [storage.write_csv(study_dir / "results.csv", [_csv_row(r) for r in rows]),
             storage.write_text(study_dir / "results.md", results_markdown(study, rows, note))]
    done = [v for v in variants if v.done]
    images = {}
    if done:
        name = study.get("name", study_dir.name)
        figures = {"curves.png": plots.plot_study_curves([(v.label, [run.history for _, run in v.done])
                                                         for v in done], title=f"{name}: mean over seeds",
                                                        steps=step_curves(done)),
                   "accuracy.png": plots.plot_seed_accuracy([(v.label, v.accuracies) for v in variants],
                                                            title=f"{name}: test accuracy")}
        for file, figure in figures.items():
            paths.append(storage.save_figure(figure, study_dir / file))
            images[file] = paths[-1].read_bytes()
    paths.append(storage.write_text(study_dir / "report.html", study_html(study, variants, rows, note, images)))
    return paths, rows


def step_curves(variants):
    """{label: ([steps.csv rows of each done seed], steps per epoch)} of the
    variants whose runs logged every N steps (fit --log-every)."""
    found = {}
    for v in variants:
        runs = [run for _, run in v.done if run.steps_per_epoch and run.steps]
        if runs:
            found[v.label] = ([run.steps for run in runs], runs[0].steps_per_epoch)
    return found


def study_html(study, variants, rows, note, images):
    """report.html of a study: the table, the note, the figures (`images`:
    PNG bytes by file name), the best variant's confusion matrix and every
    variant's first-layer kernels."""
    name = study.get("name", "study")
    body = [f"<h1>Study {_esc(name)}</h1>", f"<p>{_esc(_intro(study))}</p>", _html_table(rows),
            f"<p class='small'>std: the {STD_TEXT}; none under two seeds.</p>"]
    body += [f"<p class='note'><b>Note:</b> {_esc(note)}</p>"] if note else []
    errors = [f"<li>{_esc(r['label'])} {_esc(e)}</li>" for r in rows for e in r["errors"]]
    body += [f"<h2>Failed runs</h2><ul>{''.join(errors)}</ul>"] if errors else []
    if not images:
        body.append("<p>No run has finished yet: no figures.</p>")
        return page(f"study {name}", body)
    body += ["<h2>Training curves</h2>", _img(images["curves.png"], "training curves"),
             "<h2>Test accuracy over seeds</h2>", _img(images["accuracy.png"], "test accuracy over seeds")]
    best = max((v for v in variants if v.done), key=lambda v: sum(v.accuracies) / len(v.accuracies))
    seed, run = best.best()
    body += [f"<h2>Confusion matrix of the best variant: {_esc(best.label)} (seed {seed})</h2>",
             confusion_html(run)]
    figures = [_kernels_html(v.facts(), f"{v.label} (seed {v.done[0][0]})") for v in variants if v.done]
    body += ["<h2>First-layer kernels</h2>", f"<div class='row'>{''.join(figures)}</div>"]
    return page(f"study {name}", body)


def write_run_report(run):
    """`<stem>.report.html` beside a saved run (a Run or a model path): its
    settings, training curves, confusion matrix and first-layer kernels."""
    run = run if isinstance(run, Run) else Run.load(run)
    body = [f"<h1>Run {_esc(run.name)}</h1>", f"<p>{_esc(run.model_path)}</p>"]
    if run.record:
        record = run.record
        summary = run.settings.describe()
        if record.get("test_accuracy") is not None:
            summary += f"; test accuracy {record['test_accuracy']:.4f}, {record.get('train_seconds', 0):.1f} s"
        settings = {k: v for k, v in run.settings.to_dict().items() if v is not None}
        body += [f"<p>{_esc(summary)}</p>", "<h2>Settings</h2>",
                 _plain_table(("option", "value"), [(k, value_text(v)) for k, v in settings.items()])]
    else:
        body.append("<p>No run.json beside this model: a model kerascnn did not train.</p>")
    if run.history:
        from kerascnn.analysis.visualization import curves

        body += ["<h2>Training curves</h2>", _img(_png(curves(run, run.name)), "curves")]
    body += ["<h2>Confusion matrix</h2>", confusion_html(run), "<h2>First-layer kernels</h2>",
             _kernels_html(model_facts(run), run.stem)]
    return storage.write_text(storage.sidecar(run.output_base(), "report.html"), page(f"run {run.name}", body))


def write_report(path):
    """`kerascnn report PATH`: a study folder (with study.json, or that file
    itself) gets its results (write_results); a run (its model file, or a folder holding one
    run) its `<stem>.report.html`. Returns the paths written."""
    path = Path(path)
    if not path.exists():
        raise KerasCNNError(f"no study folder or run at {path}")
    if path.is_dir() and StudyFolder(path).is_study():
        return write_results(path)
    if path.name == StudyFolder.STUDY_FILE and path.is_file():
        return write_results(path.parent)
    return [write_run_report(Run.load(_run_model(path)))]


def _run_model(path):
    """The model of a run: `path` itself, or the one final model in folder `path`."""
    if not path.is_dir():
        return path
    models = sorted(p for p in path.glob(f"*{storage.MODEL_SUFFIX}")
                    if not p.name.startswith(".") and not CHECKPOINT.match(p.name[: -len(storage.MODEL_SUFFIX)]))
    if len(models) == 1:
        return models[0]
    if models:
        raise KerasCNNError(f"{path} holds {len(models)} runs ({', '.join(p.name for p in models[:4])}"
                            f"{', ...' if len(models) > 4 else ''}); pass one model file")
    if StudyFolder(path).failed_path(".").is_file():
        raise KerasCNNError(f"the run in {path} failed: {StudyFolder(path).failure('.')}")
    raise KerasCNNError(f"{path} holds neither a study ({StudyFolder.STUDY_FILE}) nor a finished run (a .keras model)")


def confusion_html(run):
    """The run's confusion matrix on its test set, as an <img>; a paragraph
    saying why instead when its data cannot be loaded."""
    from sklearn.metrics import confusion_matrix

    run.model()  # a model that does not load stops the report, as it did; missing data does not
    try:
        inputs = run.inputs()
    except Exception as e:  # noqa: BLE001 - whatever stops the data loading, the rest of the report stands
        return f"<p class='note'>No confusion matrix: the test data of {_esc(run.model_path)} cannot be " \
               f"loaded ({_esc(' '.join(str(e).split()) or type(e).__name__)}).</p>"
    data = inputs.data
    # its test images as the run trained on them: resized or padded
    predicted = inputs.model.predict(inputs.test_batches(), verbose=0).argmax(axis=1)
    cm = confusion_matrix(data.y_test, predicted, labels=list(range(len(data.class_names))))
    accuracy = float((predicted == data.y_test).mean())
    figure = plots.plot_confusion_matrix(cm, data.class_names,
                                         title=f"{run.stem} on {data.name} test ({accuracy:.2%})")
    return _img(_png(figure), "confusion matrix")


def _kernels_html(facts, caption):
    if facts.get("kernels") is None:
        why = facts.get("error", "the model has no convolution layer")
        return f"<figure><figcaption>{_esc(caption)}</figcaption><p>No kernels: {_esc(why)}</p></figure>"
    images, layer, depthwise = facts["kernels"]
    figure = plots.plot_kernels(images, layer, depthwise=depthwise)
    return f"<figure>{_img(_png(figure), f'{caption} kernels')}<figcaption>{_esc(caption)}</figcaption></figure>"


def _html_table(rows):
    return _plain_table([name for name, _ in TABLE], [[cell(r) for _, cell in TABLE] for r in rows])


def _plain_table(header, rows):
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
.note { background: #fff3cd; padding: 8px 12px; }
.small { font-size: 0.85em; color: #555; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; text-align: center; }"""


def page(title, body):
    """One self-contained HTML page: its style inline, its images data URIs."""
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<title>{_esc(title)}</title>\n"
            f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _png(figure):
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def _img(png, alt):
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _esc(text):
    return html.escape(str(text), quote=True)
