"""A study's results and report.html, and a single run's report: the table's
values against the runs' own records, failed and pending runs counted, the
files written, report.html self-contained and rendering in a headless
browser, and `kerascnn report`."""

import base64
import csv
import json
import re
import shutil
import statistics
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner

from kerascnn.runs import storage

from kerascnn.studies import report
from kerascnn.errors import KerasCNNError

CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver: selenium then downloads no driver
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# label -> (options changed, status of seed 0, status of seed 1)
VARIANTS = {
    "baseline": ({}, "done", "done"),
    "avg pool": ({"pool": "avg"}, "done", "done"),
    "kernel 3": ({"kernel": 3}, "done", "failed"),
    "wide": ({"channels": [8, 16]}, "failed", "pending"),
}
SEEDS = [0, 1]
BASELINE = {"activation": "relu", "pool": "max", "optimizer": "adam", "lr": 3e-3, "batch_size": 32}


def make_study(folder):
    """A study folder as `kerascnn study` writes it, with tiny real runs on the digits."""
    from kerascnn.training.fit import fit

    runs = []
    for label, (options, *states) in VARIANTS.items():
        slug = label.replace(" ", "-")
        for seed, state in zip(SEEDS, states):
            run = {"label": label, "seed": seed, "folder": f"runs/{slug}-s{seed}", "name": slug}
            runs.append(run)
            if state == "done":
                fit("lenet", "digits", epochs=2, train_size=128, seed=seed, output=folder / run["folder"],
                    name=slug, verbose=0, **{**BASELINE, **options})
            elif state == "failed":
                storage.write_json(storage.ensure_dir(folder / run["folder"]) / "failed.json",
                              {"label": label, "seed": seed, "error": f"{label} broke\n(on purpose)"})
    storage.write_json(folder / "study.json", {
        "format": 1, "name": "tiny", "preset": None, "baseline": {"arch": "lenet", **BASELINE},
        "variants": [{"label": label, "options": options} for label, (options, *_) in VARIANTS.items()],
        "seeds": SEEDS, "runs": runs})
    return folder


@pytest.fixture(scope="session")
def built_study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study"))


@pytest.fixture
def study(built_study, tmp_path):
    """A copy of the tiny study that a test may write into."""
    return Path(shutil.copytree(built_study, tmp_path / "study"))


def recorded(study_dir, label):
    """{seed: run.json} of the variant's finished runs, read directly."""
    runs = json.loads((study_dir / "study.json").read_text())["runs"]
    found = {}
    for run in runs:
        path = study_dir / run["folder"] / f"{run['name']}.run.json"
        if run["label"] == label and path.is_file():
            found[run["seed"]] = json.loads(path.read_text())
    return found


def test_rows_agree_with_the_runs_records(built_study):
    rows = {row["label"]: row for row in report.study_rows(built_study)}
    assert list(rows) == list(VARIANTS)
    for label, row in rows.items():
        records = recorded(built_study, label)
        accuracies = [records[s]["test_accuracy"] for s in sorted(records)]
        assert row["test_accuracy"] == pytest.approx(accuracies)
        assert row["seeds"] == sorted(records)
        assert row["per_seed"] == ", ".join(f"s{s}: {a:.4f}" for s, a in zip(sorted(records), accuracies))
        if accuracies:
            assert row["test_accuracy_mean"] == pytest.approx(statistics.mean(accuracies))
            histories = [json.loads((built_study / f"runs/{label.replace(' ', '-')}-s{s}"
                                     / f"{label.replace(' ', '-')}.history.json").read_text()) for s in records]
            best_val = statistics.mean(max(r["val_accuracy"] for r in h) for h in histories)
            assert row["best_val_accuracy"] == pytest.approx(best_val)
            assert row["epochs"] == 2
            assert row["seconds_per_epoch"] == pytest.approx(
                statistics.mean(r["train_seconds"] / 2 for r in records.values()))
        expected_std = statistics.stdev(accuracies) if len(accuracies) > 1 else None  # sample std
        assert row["test_accuracy_std"] == (pytest.approx(expected_std) if expected_std is not None else None)
    assert rows["baseline"]["differs"] == "baseline"
    assert rows["avg pool"]["differs"] == "pool=avg" and rows["wide"]["differs"] == "channels=8/16"
    # every value is plain: a DataFrame takes the rows as they are
    for row in rows.values():
        for value in row.values():
            assert value is None or type(value) in (int, float, str, list)


def test_failed_and_pending_runs_are_counted_with_their_errors(built_study):
    rows = {row["label"]: row for row in report.study_rows(built_study)}
    counts = {label: (r["runs_done"], r["runs_failed"], r["runs_pending"]) for label, r in rows.items()}
    assert counts == {"baseline": (2, 0, 0), "avg pool": (2, 0, 0), "kernel 3": (1, 1, 0), "wide": (0, 1, 1)}
    assert rows["kernel 3"]["errors"] == ["s1: kernel 3 broke (on purpose)"]
    wide = rows["wide"]
    assert wide["test_accuracy_mean"] is None and wide["encoder_params"] is None and wide["test_accuracy"] == []


def test_parameter_counts_come_from_the_variants_models(built_study):
    from kerascnn.runs.saved import Run

    rows = {row["label"]: row for row in report.study_rows(built_study)}
    model = Run.load(built_study / "runs/baseline-s0/baseline.keras").model()
    assert rows["baseline"]["encoder_params"] + rows["baseline"]["head_params"] == model.count_params()
    # a 3x3 kernel instead of 5x5: fewer encoder weights, a larger flattened input to the head
    assert rows["kernel 3"]["encoder_params"] < rows["baseline"]["encoder_params"]
    assert rows["kernel 3"]["head_params"] > rows["baseline"]["head_params"]


def test_a_model_cut_short_is_pending_not_done(study):
    (study / "runs/wide-s1").mkdir()
    (study / "runs/wide-s1/wide.keras").write_bytes(b"PK\x03\x04 cut short")
    wide = next(r for r in report.study_rows(study) if r["label"] == "wide")
    assert (wide["runs_done"], wide["runs_failed"], wide["runs_pending"]) == (0, 1, 1)


def row(label, mean, std, n=3):
    return {"label": label, "test_accuracy_mean": mean, "test_accuracy_std": std, "runs_done": n}


def test_note_says_not_a_result_only_within_the_spread():
    close = report.study_note([row("a", 0.880, 0.006), row("b", 0.885, 0.002), row("c", 0.70, 0.01)])
    assert "not a result" in close and "b (0.8850 ± 0.0020 (3 seeds)) and a" in close
    assert report.study_note([row("a", 0.880, 0.004), row("b", 0.90, 0.002)]) is None
    assert "unknown" in report.study_note([row("a", 0.88, None, 1), row("b", 0.89, None, 1)])
    assert report.study_note([row("a", 0.88, 0.01), row("b", None, None, 0)]) is None


def images_in(page):
    """The PNGs of a page's <img> tags, checked to be data URIs."""
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert sources and len(sources) == page.count("<img ")
    pngs = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:80]
        pngs.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return pngs


def assert_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    for outside in ("http://", "https://", "<link", "<script", "url(", "@import"):
        assert outside not in page, outside
    assert re.findall(r"src=['\"]?([^'\" >]*)", page) and \
        all(s.startswith("data:") for s in re.findall(r"src=['\"]?([^'\" >]*)", page))


def decoded(png):
    import matplotlib.image

    image = matplotlib.image.imread(BytesIO(png), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 50 and image[..., :3].std() > 0.02
    return image


def test_write_results_writes_the_table_figures_and_one_page(study):
    paths = report.write_results(study)
    assert [p.name for p in paths] == ["results.csv", "results.md", "curves.png", "accuracy.png", "report.html"]
    md = (study / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["variant", "differs from baseline", "encoder params", "head params", "epochs", "s/epoch",
                      "best val acc (mean)", "test acc mean ± sample std over seeds (ddof=1) (n seeds)",
                      "test acc per seed", "runs done/failed/pending"]
    assert len(table) == 2 + len(VARIANTS)
    for line, label in zip(table[2:4], ("baseline", "avg pool")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        accuracies = [r["test_accuracy"] for _, r in sorted(recorded(study, label).items())]
        assert cells[0] == label and cells[9] == "2/0/0"
        assert cells[7] == f"{statistics.mean(accuracies):.4f} ± {statistics.stdev(accuracies):.4f} (2 seeds)"
    assert "kernel 3 s1: kernel 3 broke (on purpose)" in md and "wide s0: wide broke (on purpose)" in md
    accuracies = [r["test_accuracy"] for _, r in sorted(recorded(study, "baseline").items())]
    with open(study / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == list(VARIANTS) and rows[3]["runs_pending"] == "1"
    assert [float(a) for a in rows[0]["test_accuracy"].split()] == pytest.approx(accuracies)
    for name in ("curves.png", "accuracy.png"):
        decoded((study / name).read_bytes())
    page = (study / "report.html").read_text()
    assert_self_contained(page)
    pngs = images_in(page)
    assert len(pngs) == 2 + 1 + 3  # curves, accuracy, the best variant's confusion, kernels of 3 done variants
    assert pngs[:2] == [(study / "curves.png").read_bytes(), (study / "accuracy.png").read_bytes()]
    for png in pngs:
        decoded(png)
    assert "Confusion matrix of the best variant" in page and "First-layer kernels" in page


def logged_steps(run_folder, name, every=2):
    """A steps.csv beside a finished run, as fit --log-every writes it, with made-up losses, and its record's
    log_every set."""
    from kerascnn.runs.files import STEP_COLUMNS, step_line

    record = json.loads((run_folder / f"{name}.run.json").read_text())
    storage.write_json(run_folder / f"{name}.run.json", {**record, "log_every": every})
    steps = record["steps_per_epoch"]
    rows = [{"step": s, "epoch": (s - 1) // steps + 1, "batch": (s - 1) % steps + 1, "seen": 0, "loss": 3.0 / s,
             "accuracy": 0.5} for s in range(every, 2 * steps + 1, every)]
    (run_folder / f"{name}.steps.csv").write_text(",".join(STEP_COLUMNS) + "\n" + "".join(map(step_line, rows)))
    return rows, steps


def test_study_curves_draw_the_per_step_curves_of_the_runs_that_logged_them(study, monkeypatch):
    from kerascnn import plots

    logged = [logged_steps(study / f"runs/baseline-s{seed}", "baseline") for seed in SEEDS]
    drawn = {}
    draw = plots.plot_study_curves
    monkeypatch.setattr(plots, "plot_study_curves", lambda *a, **k: drawn.update(k) or draw(*a, **k))
    report.write_results(study)
    assert drawn["steps"] == {"baseline": ([rows for rows, _ in logged], logged[0][1])}
    decoded((study / "curves.png").read_bytes())
    (study / "runs/baseline-s1/baseline.steps.csv").write_text("step,epoch\n")
    with pytest.raises(KerasCNNError, match="cannot use the per-step log .*baseline.steps.csv: its first line"):
        report.write_results(study)


def test_the_report_says_when_test_data_cannot_be_loaded(study, monkeypatch):
    from kerascnn.runs.saved import Run

    def missing(self, *args, **kwargs):
        raise KerasCNNError("no mnist/ folder in /nowhere")

    monkeypatch.setattr(Run, "load_data", missing)
    report.write_results(study)
    page = (study / "report.html").read_text()
    assert "No confusion matrix: the test data of" in page and "no mnist/ folder in /nowhere" in page
    assert len(images_in(page)) == 2 + 3


def test_a_study_with_nothing_finished_still_reports_its_progress(study):
    for folder in (study / "runs").iterdir():
        if not (folder / "failed.json").exists():
            shutil.rmtree(folder)
    paths = report.write_results(study)
    assert [p.name for p in paths] == ["results.csv", "results.md", "report.html"]
    assert "No run has finished yet" in (study / "report.html").read_text()


def test_read_study_refuses_what_is_not_a_study(tmp_path):
    with pytest.raises(KerasCNNError, match="has no study.json"):
        report.read_study(tmp_path)
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(KerasCNNError, match="cannot read"):
        report.read_study(tmp_path)
    (tmp_path / "study.json").write_text(json.dumps({"format": 1, "variants": [{"label": 3}], "runs": []}))
    with pytest.raises(KerasCNNError, match="damaged"):
        report.read_study(tmp_path)


# --- in a browser


def chromium(width=1280, height=900):
    """A headless Chromium (selenium, Debian's chromium and chromium-driver);
    the test skips, saying what is missing, where there is none."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(f"no headless browser here ({'chromedriver' if browser else 'chromium'} not found): "
                    f"apt-get install chromium chromium-driver, as .ci/run does")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


# Each image's natural size, and the share of its pixels the browser painted opaque: our PNGs have an opaque
# background, so a PNG cut short shows its natural size (from its header) but leaves rows transparent.
IMAGES_JS = """return Array.from(document.images).map(image => {
  const canvas = document.createElement('canvas');
  [canvas.width, canvas.height] = [image.naturalWidth, image.naturalHeight];
  if (!canvas.width || !canvas.height) return [image.alt, image.naturalWidth, image.naturalHeight, 0];
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0;
  for (let k = 3; k < pixels.length; k += 4) opaque += pixels[k] === 255;
  return [image.alt, image.naturalWidth, image.naturalHeight, opaque / (canvas.width * canvas.height)];
});"""
FETCHED_JS = "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))"


def test_every_image_of_report_html_renders_in_headless_chromium(study):
    report.write_results(study)
    browser = chromium()
    try:
        browser.get((study / "report.html").as_uri())
        images = browser.execute_script(IMAGES_JS)
        fetched = browser.execute_script(FETCHED_JS)
        title = browser.title
    finally:
        browser.quit()
    assert title == "study tiny"
    assert len(images) == 6
    assert all(width > 0 and height > 0 and painted == 1 for _, width, height, painted in images), images
    assert fetched == []  # nothing but the page itself: it works offline


def screenshot(page, png, width=1280, height=None):
    """Save a screenshot of an HTML file (for docs/images): the whole page,
    or its top `height` pixels."""
    browser = chromium(width)
    try:
        browser.get(Path(page).resolve().as_uri())
        height = height or browser.execute_script("return document.documentElement.scrollHeight") + 100
        browser.set_window_size(width, height)
        browser.save_screenshot(str(png))
    finally:
        browser.quit()


# --- kerascnn report


def cli(*args):
    from kerascnn.cli.commands import cli as group

    return CliRunner().invoke(group, [str(a) for a in args])


def test_report_command_on_a_study_folder(study):
    for target in (study, study / "study.json"):
        result = cli("report", target)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [f"wrote {study / name}" for name in (
            "results.csv", "results.md", "curves.png", "accuracy.png", "report.html")]


def test_report_command_on_a_single_run(study):
    folder = study / "runs/avg-pool-s1"
    for target in (folder, folder / "avg-pool.keras"):
        result = cli("report", target)
        assert result.exit_code == 0, result.output
        assert result.output == f"wrote {folder / 'avg-pool.report.html'}\n"
    page = (folder / "avg-pool.report.html").read_text()
    assert_self_contained(page)
    assert "<td>pool</td><td>avg</td>" in page and "<td>channels</td><td>6/16</td>" in page
    assert len(images_in(page)) == 3  # curves, confusion matrix, kernels
    for png in images_in(page):
        decoded(png)


@pytest.mark.parametrize("where, message", [
    ("nowhere", "no study folder or run at"),
    ("runs", r"holds neither a study \(study.json\) nor a finished run"),
    ("runs/wide-s0", r"the run in .*wide-s0 failed: wide broke \(on purpose\)$"),
    ("runs/baseline-s0/baseline.run.json", "is not a .keras model file"),
])
def test_report_command_says_what_is_wrong_in_one_line(built_study, where, message):
    result = cli("report", built_study / where)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), result.output


def test_a_folder_of_several_runs_asks_for_one(built_study, tmp_path):
    for name in ("baseline", "avg-pool"):
        for path in (built_study / f"runs/{name}-s0").iterdir():
            shutil.copy(path, tmp_path)
    result = cli("report", tmp_path)
    assert result.exit_code == 1
    assert "holds 2 runs (avg-pool.keras, baseline.keras); pass one model file" in result.output


def test_the_confusion_matrix_of_a_padded_run_agrees_with_evaluate(tmp_path, monkeypatch):
    """A `--resize pad` run's report computes its confusion matrix on the test images padded as in training
    (it once stretched them): the same accuracy and matrix as `kerascnn evaluate`."""
    import numpy as np

    from kerascnn import plots
    from kerascnn.analysis.evaluation import evaluate
    from kerascnn.runs.saved import Run
    from kerascnn.training.fit import fit

    result = fit("lenet", "digits", epochs=5, batch_size=32, activation="relu", pool="max", image_size=40,
                 resize="pad", output=tmp_path, verbose=0)
    assert result.test_accuracy > 0.5  # a model that tells the digits apart: stretched images would fool it
    from matplotlib.figure import Figure

    drawn = []

    def draw(cm, class_names, title):
        drawn.append(cm)
        return Figure()

    monkeypatch.setattr(plots, "plot_confusion_matrix", draw)
    report.confusion_html(Run.load(result.model_path))
    evaluated = evaluate(result.model_path, output=tmp_path / "eval", top_losses=0)
    np.testing.assert_array_equal(drawn[0], evaluated.confusion)
    assert np.trace(drawn[0]) / drawn[0].sum() == pytest.approx(evaluated.accuracy)
