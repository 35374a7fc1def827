"""Studies: many variants of a run, each with several seeds, in one folder.

A study is a baseline (options of `fit`) and variants (each a label and the
options it changes), repeated over seeds. Each (variant, seed) is an
ordinary run, saved under `<study folder>/runs/<variant>-s<seed>/`; the
study's own record is `study.json`, and the results (results.csv/.md, the
plots and report.html) come from kerascnn.studies.report. Running the same study
again keeps finished runs, continues an interrupted one and retries failed
ones, so nothing is trained twice.

    from kerascnn.studies.study import study
    rows = study(preset="lenet-ablation", seeds=3, epochs=2)   # a quick look
"""

import dataclasses
import itertools
import re
import time
from pathlib import Path

from kerascnn.config.options import (FIELDS, MODEL_OPTIONS, FitConfig, _jsonable, coerce_option, option_name,
                                     read_options)
from kerascnn.config.spelling import OptionError, spell, spell_set
from kerascnn.errors import KerasCNNError
from kerascnn.runs.files import STUDY_FORMAT, StudyFolder

BASELINE = "baseline"
# Options a study sets for each run itself.
PER_RUN = ("seed", "output", "name", "resume", "overwrite")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant of a study: its label and the options it changes."""

    label: str
    options: dict

    @property
    def slug(self):
        """The label as a folder name."""
        return re.sub(r"[^A-Za-z0-9._=+-]+", "_", self.label).strip("_") or "variant"


@dataclasses.dataclass(frozen=True)
class StudyRun:
    label: str
    seed: int
    folder: str  # relative to the study folder
    name: str  # the run's name: <folder>/<name>.keras


@dataclasses.dataclass(frozen=True)
class Study:
    """What a study runs: every variant over every seed, each variant's
    options over the baseline's."""

    name: str
    baseline: dict
    variants: tuple
    seeds: tuple = (0,)
    preset: str = None

    def __post_init__(self):
        labels = [v.label for v in self.variants]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise OptionError(f"study {self.name!r}: the label {twice[0]!r} names two variants")
        if not self.variants:
            raise OptionError(f"study {self.name!r} has no variants")
        for v in self.variants:
            self.config(v, self.seeds[0])  # every variant checked before anything runs

    def config(self, variant, seed, folder=None):
        """The FitConfig of one run (saved in `folder` under the arch's name)."""
        try:
            config = FitConfig(**{**self.baseline, **variant.options, "seed": seed})
        except OptionError as e:
            raise OptionError(f"variant {variant.label!r}: {e}") from None
        return config if folder is None else config.replace(output=str(folder), name=config.arch)

    def runs(self):
        """Every run of the study, variant by variant, seed by seed."""
        return [StudyRun(v.label, seed, f"runs/{v.slug}-s{seed}", self.config(v, seed).arch)
                for v in self.variants for seed in self.seeds]

    def record(self):
        return {"format": STUDY_FORMAT, "name": self.name, "preset": self.preset,
                "baseline": {k: _jsonable(v) for k, v in self.baseline.items()},
                "variants": [{"label": v.label, "options": {k: _jsonable(x) for k, x in v.options.items()}}
                             for v in self.variants],
                "seeds": list(self.seeds), "runs": [dataclasses.asdict(r) for r in self.runs()]}


# --- making a study: from the command line, a file, or a preset

def parse_vary(text):
    """"pool=avg,max" -> ("pool", ["avg", "max"]); a value that is itself a
    list is written with "/": "channels=6/16,16/32" (a path keeps its "/":
    "dataset=digits,my/pictures")."""
    key, sep, values = text.partition("=")
    name = key.strip().lstrip("-").replace("-", "_")
    if not sep or not values.strip():
        raise OptionError(f"{spell('vary')} expects OPTION=VALUE,VALUE such as pool=avg,max, got {text!r}")
    if name not in FIELDS or name in PER_RUN:
        raise OptionError(f"{spell('vary')}: {key.strip()!r} is not an option a study can vary; "
                          f"the options are: {', '.join(n for n in FIELDS if n not in PER_RUN)}")
    listed = FIELDS[name].metadata["kind"] in ("names", "ints")  # "/" separates a list's items; else a path's
    return name, [coerce_option(name, v.strip().replace("/", ",") if listed else v.strip()) for v in values.split(",")]


def _text(value):
    if isinstance(value, (tuple, list)):
        return "/".join(map(str, value))
    return str(value)


def grid(vary):
    """Every combination of the varied values: one variant each."""
    names = [name for name, _ in vary]
    return tuple(Variant(", ".join(f"{n}={_text(v)}" for n, v in zip(names, values)), dict(zip(names, values)))
                 for values in itertools.product(*(values for _, values in vary)))


def baseline_value(baseline, name):
    """The value the baseline runs with: given, else the family's default."""
    config = FitConfig(**baseline)
    value = getattr(config, name)
    if value is None and name in MODEL_OPTIONS:
        value = config.family.options.get(name)
    return value


def ablation(baseline, vary):
    """The baseline, then one change at a time: every value of each varied
    option other than the baseline's."""
    variants = [Variant(BASELINE, {})]
    for name, values in vary:
        base = baseline_value(baseline, name)
        variants += [Variant(f"{name}={_text(v)}", {name: v}) for v in values if v != base]
    return tuple(variants)


def read_study_file(path):
    """(name, baseline, variants) from a TOML or YAML study file: a
    `baseline` table of options and a list of `variants`, each a `label`
    and the options it changes (inline, or under `options`)."""
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise OptionError(f"{path}: a study file is a .toml or .yaml file")
    spec = read_options(path)
    baseline, variants = spec.get("baseline", {}), spec.get("variants")
    if not isinstance(baseline, dict) or not isinstance(variants, list) or not variants:
        raise OptionError(f"{path}: a study file holds a `baseline` table of options and a list of `variants`")
    out = []
    for i, v in enumerate(variants, start=1):
        if not isinstance(v, dict) or not isinstance(v.get("label"), str):
            raise OptionError(f"{path}: variant {i} needs a label (and the options it changes)")
        options = dict(v.get("options", {}), **{k: x for k, x in v.items() if k not in ("label", "options")})
        out.append(Variant(v["label"], _options(options, f"{path}, variant {v['label']!r}")))
    return spec.get("name", path.stem), _options(baseline, f"{path}, baseline"), tuple(out)


def _options(mapping, source):
    """Option names as FitConfig knows them (keywords or --flags), with
    their values checked; the ones a study sets per run are refused."""
    options = {}
    for key, value in mapping.items():
        name = option_name(key, source)
        if name in PER_RUN:
            raise OptionError(f"{source}: {key} is set by the study for each run")
        options[name] = value
    try:
        config = FitConfig(**options)
    except OptionError as e:
        raise OptionError(f"{source}: {e}") from None
    return {name: getattr(config, name) for name in options}


def make_study(preset=None, file=None, *, vary=(), ablate=False, seeds=1, seed=0, name=None, **options):
    """A Study from a preset or a study file (or neither), `vary` (texts as
    for --vary, or (name, values) pairs) as a grid or, with `ablate`, one
    change at a time, and `options` overriding the baseline."""
    if preset and file:
        raise OptionError(f"give {spell('preset')} or a study file, not both")
    variants = ()
    if preset:
        from kerascnn.studies.presets import preset as preset_spec

        baseline, given = preset_spec(preset)
        base_name, variants = preset, tuple(Variant(label, options) for label, options in given)
    elif file:
        base_name, baseline, variants = read_study_file(file)
    else:
        base_name, baseline = "study", {}
    baseline = {**baseline, **{k: v for k, v in options.items() if v is not None and v != ()}}
    vary = [parse_vary(v) if isinstance(v, str) else tuple(v) for v in vary]
    if vary:
        variants = ablation(baseline, vary) if ablate else variants + grid(vary)
    elif ablate:
        raise OptionError(f"{spell_set('ablate')} needs {spell('vary')} options to change one at a time")
    if not variants:
        raise OptionError(f"a study needs variants: {spell('preset')}, a study file, or {spell('vary')}")
    if seeds < 1:
        raise OptionError(f"{spell('seeds')} must be at least 1, got {seeds}")
    return Study(name or base_name, baseline, variants, tuple(range(seed, seed + seeds)), preset)


# --- running it

def study_folder(study, output=None):
    return Path(output) if output else Path("saved_models") / study.name


def parse_shard(text):
    """"I/N" -> (I, N), I counted from 0 (as Kubernetes' and SLURM's indices)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text or ""))
    if not match or not int(match[1]) < int(match[2]):
        raise OptionError(f"{spell('shard')} expects I/N with 0 <= I < N, such as 0/4, got {text!r}")
    return int(match[1]), int(match[2])


def open_study(study, folder):
    """Write (or check) the study's record in its folder."""
    record = study.record()
    files = StudyFolder(folder)
    if files.is_study():
        try:
            old = files.read()
        except KerasCNNError as e:
            raise KerasCNNError(f"{e}; remove it to start the study over") from None
        same = {k: old.get(k) for k in ("baseline", "variants")} == {k: record[k] for k in ("baseline", "variants")}
        if not same:
            raise KerasCNNError(f"{folder}/ holds another study ({old.get('name')!r}, other baseline or variants); "
                                f"choose another {spell('output')}, or remove it to start over")
        seeds = sorted(set(old.get("seeds", [])) | set(study.seeds))
        if seeds != list(study.seeds):  # more seeds later: one study, all its runs
            study = dataclasses.replace(study, seeds=tuple(seeds))
            record = study.record()
    files.write(record)
    return study


def run_one(study, folder, run, *, verbose=0):
    """Train one run of the study (continuing it if it was interrupted);
    returns its FitResult, or writes failed.json and returns the error."""
    import keras

    from kerascnn.runtime.backend import quiet_tensorflow
    from kerascnn.training.fit import fit

    files = StudyFolder(folder)
    variant = next(v for v in study.variants if v.label == run.label)
    files.clear_failed(run.folder)
    resume = files.run_status(run.folder, run.name) == "interrupted"
    config = study.config(variant, run.seed, folder / run.folder).replace(resume=resume)
    keras.backend.clear_session()  # each run starts from a fresh Keras state in this process
    quiet_tensorflow()  # run after run retraces tf.functions: TensorFlow warns, needlessly
    try:
        return fit(config, verbose=verbose)
    except (KerasCNNError, OptionError, Exception) as e:  # noqa: BLE001 - a failed variant must not stop the others
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
        files.mark_failed(run.folder, run.label, run.seed, error)
        return e


def cpu_sizes(study):
    """One line, when no GPU is visible, naming the variants that train at
    their family's smallest size instead of the textbook one (None if none)."""
    from kerascnn.runtime.distribution import accelerator_available

    configs = [study.config(v, study.seeds[0]) for v in study.variants]
    small = {c.arch: c.family for c in configs if c.image_size is None and c.family.default_size is not None}
    if not small or accelerator_available():
        return None
    return (f"no GPU visible: {', '.join(small)} train at their smallest sizes "
            f"({', '.join(str(f.min_size) for f in small.values())}), not their textbook ones "
            f"({', '.join(str(f.default_size) for f in small.values())}); {spell('image_size')} N to insist")


def check_data(study):
    """Fail at once, before any run, when a dataset the study trains on
    cannot be found (rather than once per run)."""
    from kerascnn.data.sources import check_available

    for dataset, data_dir in dict.fromkeys((c.dataset, c.data_dir) for c in
                                           (study.config(v, study.seeds[0]) for v in study.variants)):
        check_available(dataset, data_dir)


def _eta(seconds):
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_study(study, output=None, *, shard=None, echo=print, verbose=0):
    """Run the study's runs (this shard's share of them) that are not done,
    one line each with progress and time left; then write the results.
    Returns the rows of the results table (kerascnn.studies.report.study_rows)."""
    folder = study_folder(study, output)
    check_data(study)
    study = open_study(study, folder)
    runs = study.runs()
    if shard is not None:
        index, count = parse_shard(shard) if isinstance(shard, str) else shard
        runs = runs[index::count]
    todo = [r for r in runs if StudyFolder(folder).run_status(r.folder, r.name) != "done"]
    if echo:
        echo(f"study {study.name}: {_count(len(study.variants), 'variant')} x {_count(len(study.seeds), 'seed')} = "
             f"{_count(len(study.runs()), 'run')} in {folder}/; {len(runs) - len(todo)} done, {len(todo)} to run")
        said = cpu_sizes(study) if todo else None
        if said:
            echo(said)
    started = time.perf_counter()
    for i, run in enumerate(todo, start=1):
        result = run_one(study, folder, run, verbose=verbose)
        if echo:
            left = (time.perf_counter() - started) / i * (len(todo) - i)
            said = (f"failed: {str(result).splitlines()[0] if str(result) else type(result).__name__}"
                    if isinstance(result, Exception) else
                    f"test accuracy {result.test_accuracy:.4f} ({result.record['train_seconds']:.1f} s)")
            echo(f"[{i}/{len(todo)}] {run.label} seed {run.seed}: {said}"
                 + (f"; about {_eta(left)} left" if i < len(todo) else ""))
    from kerascnn.studies import report

    paths, rows = report.write_study_results(folder)
    if echo:
        for path in paths:
            echo(f"wrote {path}")
    return rows


def study(preset=None, file=None, *, output=None, shard=None, echo=print, **options):
    """Make and run a study (see make_study for the options); returns the
    results table as rows (one dict per variant) for a DataFrame."""
    return run_study(make_study(preset, file, **options), output, shard=shard, echo=echo)


def _count(n, noun):
    """'1 seed', '3 seeds'."""
    return f"{n} {noun}{'s' * (n != 1)}"
