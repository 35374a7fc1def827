"""kerascnn.scratch: LeNet-5 from scratch in NumPy, its gradients against
centred differences and against Keras (the core tests: under tensorflow here,
under jax and torch through tests/test_backend.py), its Solver, its files and
`kerascnn scratch`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kerascnn.errors import KerasCNNError
from kerascnn.scratch import LeNet5, Solver, adam, sgd
from kerascnn.scratch import check
from kerascnn.scratch import layers as L
from kerascnn.scratch.experiment import scratch_defaults, to_lenet_input, train_scratch
from tests.conftest import REPO


def test_every_backward_pass_matches_centred_differences():
    rows = check.finite_difference_checks(seed=3)
    names = [name for name, _ in rows]
    assert any("im2col" in n for n in names) and any("loops" in n for n in names)
    assert any(n.startswith("LeNet-5") and n.endswith("conv1.w") for n in names)
    assert all(error <= check.FD_TOLERANCE for _, error in rows), [r for r in rows if r[1] > check.FD_TOLERANCE]


def test_the_check_catches_a_wrong_backward_pass(monkeypatch):
    monkeypatch.setattr(L, "relu_backward", lambda dout, x: dout)  # forgets the mask
    rows = dict(check.finite_difference_checks())
    assert rows["relu dx"] > 0.1


def test_loops_and_im2col_compute_the_same_network():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 1, 32, 32)), rng.integers(0, 10, size=4)
    slow, fast = LeNet5(weight_scale=0.1, seed=2), LeNet5(weight_scale=0.1, seed=2, fast=True)
    loss_slow, grads_slow = slow.loss(x, y)
    loss_fast, grads_fast = fast.loss(x, y)
    assert loss_slow == pytest.approx(loss_fast, rel=1e-12)
    for name in slow.params:
        np.testing.assert_allclose(grads_fast[name], grads_slow[name], rtol=1e-9, atol=1e-15)


def test_max_pool_sends_a_tied_window_s_gradient_to_its_first_maximum():
    x = np.ones((1, 1, 2, 2))
    for backward in (L.max_pool_backward, L.max_pool_backward_windows):
        dx = backward(np.full((1, 1, 1, 1), 5.0), x)
        np.testing.assert_array_equal(dx[0, 0], [[5.0, 0.0], [0.0, 0.0]])


@pytest.mark.core  # and so under jax and torch too (tests/test_backend.py)
def test_numpy_lenet5_equals_keras_lenet5_scores_loss_and_every_gradient():
    rows = dict(check.keras_checks(batch=6, seed=1))
    assert set(rows) == {"scores", "loss", *(f"d loss / d {p}" for p in LeNet5().params)}
    assert all(error <= check.KERAS_TOLERANCE for error in rows.values()), rows


def test_the_keras_check_fails_when_the_weights_are_copied_in_the_wrong_order(monkeypatch):
    def unflipped(name, array, pool2_shape):  # fc1's rows left in Keras' (height, width, channel) order
        array = np.asarray(array, np.float64)
        return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array

    monkeypatch.setattr(check, "to_numpy_layout", unflipped)
    rows = dict(check.keras_checks(batch=4))
    assert rows["scores"] > 1e-2 and rows["d loss / d conv1.w"] > 1e-2


def test_update_rules_share_one_interface_and_follow_their_formulas():
    w, dw = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    next_w, config = sgd(w, dw, {"learning_rate": 0.1})
    np.testing.assert_allclose(next_w, [0.95, -2.05])
    assert config == {"learning_rate": 0.1}
    next_w, config = adam(w, dw, {"learning_rate": 0.1})
    # first step: bias-corrected m = dw, v = dw^2, so the step is lr * sign(dw) (up to epsilon)
    np.testing.assert_allclose(next_w, w - 0.1, rtol=1e-7)
    assert config["t"] == 1
    next_w, config = adam(next_w, -dw, config)
    assert config["t"] == 2 and np.all(next_w > w - 0.1)  # the gradient turned: the second step goes back


def tiny_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 16, 16))
    y = (x[:, 0, :8].mean(axis=(1, 2)) > 0).astype(int)  # learnable: the top half's brightness
    return {"x_train": x, "y_train": y, "x_val": x[:20], "y_val": y[:20]}


def tiny_model(**kw):
    return LeNet5((1, 16, 16), 2, channels=(2, 4), units=(8, 6), kernel=3, weight_scale=0.3, **kw)


def test_solver_decays_the_rate_after_decay_after_and_records_every_iteration():
    lines = []
    solver = Solver(tiny_model(fast=True), tiny_data(), learning_rate=1e-2, lr_decay=0.5, decay_after=2,
                    batch_size=25, num_epochs=4, print_every=2, echo=lines.append)
    history = solver.train()
    assert [row["lr"] for row in history] == pytest.approx([1e-2, 1e-2, 5e-3, 2.5e-3])
    assert len(solver.loss_history) == 4 * 3  # 60 images in batches of 25: 25, 25, 10
    assert [r["seen"] for r in solver.step_rows[:3]] == [25, 50, 60]
    assert [r["step"] for r in solver.step_rows] == list(range(1, 13))
    assert lines[0] == "loss: %8f  [50/60]" % solver.loss_history[1]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(history[0])


def test_samplings_visit_the_training_set_as_named():
    def order(sampling):
        return Solver(tiny_model(), tiny_data(), sampling=sampling, seed=1).epoch_order()

    np.testing.assert_array_equal(order("sequential"), np.arange(60))
    shuffled = order("shuffle")
    assert sorted(shuffled) == list(range(60)) and list(shuffled) != list(range(60))
    drawn = order("bootstrap")
    assert len(drawn) == 60 and len(set(drawn)) < 60 and drawn.min() >= 0 and drawn.max() < 60
    with pytest.raises(KerasCNNError, match="sampling"):
        order("random")


def test_a_saved_model_loads_without_pickle_and_predicts_the_same(tmp_path):
    model = tiny_model(seed=4)
    x = np.random.default_rng(1).normal(size=(5, 1, 16, 16))
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:
        assert "conv1.w" in f.files and json.loads(str(f["config"]))["kernel"] == 3
    np.testing.assert_array_equal(LeNet5.load(path).predict(x), model.predict(x))
    np.testing.assert_allclose(LeNet5.load(path, fast=True).predict(x), model.predict(x), rtol=1e-12)  # im2col sums in another order


def test_loading_anything_else_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(KerasCNNError, match="not a LeNet-5 saved by kerascnn.scratch"):
        LeNet5.load(bad)
    np.savez(tmp_path / "other.npz", config=np.array(json.dumps({"format": 1, "model": "LeNet5", "kernel": 3,
                                                                  "input_shape": [1, 16, 16]})), x=np.zeros(2))
    with pytest.raises(KerasCNNError, match="do not match"):
        LeNet5.load(tmp_path / "other.npz")


def test_images_become_padded_normalized_nchw_inputs():
    images = np.zeros((2, 28, 28, 1), np.uint8)
    images[:, 0, 0] = 255
    x = to_lenet_input(images, [0.5], [0.25])
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float64
    assert x[0, 0, 2, 2] == pytest.approx(2.0) and x[0, 0, 0, 0] == pytest.approx(-2.0)  # the border is black
    with pytest.raises(KerasCNNError, match="up to 32x32"):
        to_lenet_input(np.zeros((1, 40, 40, 1), np.uint8), [0.0], [1.0])


def test_defaults_are_the_report_s_and_digits_own():
    assert scratch_defaults("mnist", batch_size=None, weight_scale=None, val_size=None) == {
        "batch_size": 200, "weight_scale": 1e-3, "val_size": 1000}
    assert scratch_defaults("digits", batch_size=64, weight_scale=None, val_size=None) == {
        "batch_size": 64, "weight_scale": 1e-2, "val_size": 0.1}


def test_train_scratch_writes_its_files_and_learns_the_digits(tmp_path):
    lines = []
    result = train_scratch("digits", epochs=2, fast=True, output=tmp_path, name="s", echo=lines.append)
    assert result.test_accuracy > 0.4  # chance is 0.1
    assert sorted(p.name for p in result.paths) == sorted(
        f"s.{kind}" for kind in ("history.csv", "history.json", "steps.csv", "curves.png", "confusion.png",
                                 "metrics.json", "npz"))
    metrics = json.loads((tmp_path / "s.metrics.json").read_text())
    assert metrics["accuracy"] == result.test_accuracy and sum(map(sum, metrics["confusion_matrix"])) == 360
    assert metrics["settings"]["batch_size"] == 20 and metrics["most_confused"]
    steps = (tmp_path / "s.steps.csv").read_text().splitlines()
    assert steps[0].startswith("step,epoch,batch,seen,loss") and len(steps) == 1 + 2 * 65  # 1,293 in 20s: 65
    assert lines[-1].startswith("test accuracy: ")
    reloaded = LeNet5.load(tmp_path / "s.npz")
    assert reloaded.config["input_shape"] == [1, 32, 32]


def test_the_scratch_package_imports_no_framework():
    code = ("import sys, kerascnn.scratch, kerascnn.scratch.experiment, kerascnn.scratch.check; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def run_scratch(*args):
    return subprocess.run([sys.executable, "cli.py", "scratch", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


def test_cli_scratch_on_digits_learns_in_seconds(tmp_path):
    proc = run_scratch("--dataset", "digits", "--epochs", "3", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    accuracy = float(next(line for line in proc.stdout.splitlines() if line.startswith("test accuracy: ")).split()[2])
    assert accuracy > 0.5  # chance: 0.1
    assert "loss: " in proc.stdout and "[" in proc.stdout and (tmp_path / "lenet5_scratch.npz").is_file()


@pytest.mark.core
def test_cli_scratch_check_passes_and_says_so():
    proc = run_scratch("--check")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "every difference is within its tolerance" in proc.stdout
    assert "d loss / d fc1.w" in proc.stdout and "FAILED" not in proc.stdout


def test_cli_scratch_check_exits_1_when_a_gradient_is_wrong(monkeypatch):
    from click.testing import CliRunner

    from kerascnn.cli.commands import cli

    right = L.affine_backward
    monkeypatch.setattr(L, "affine_backward", lambda dout, x, w: (lambda dx, dw, db: (2 * dx, dw, db))(
        *right(dout, x, w)))  # dx twice what it is
    monkeypatch.setattr(check, "keras_checks", lambda: [("scores", 0.0)])  # the Keras half is tested above
    result = CliRunner().invoke(cli, ["scratch", "--check"])
    assert result.exit_code == 1 and "FAILED" in result.output
    assert "some differences exceed their tolerance" in result.output


def test_cli_scratch_bad_input_is_one_line():
    proc = run_scratch("--dataset", "digits", "--epochs", "0")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
