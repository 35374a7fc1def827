"""kerascnn.runtime.distribution: training under tf.distribute (mirrored on two logical CPUs, multi-worker on two
processes) and keras.distribution (data-parallel on two virtual JAX devices, and on two processes through
jax.distributed), and the cluster checks."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn.data import host

from kerascnn.runs import storage
from kerascnn.errors import KerasCNNError
from kerascnn.training.fit import fit
from kerascnn.config.tricks import Tricks
from tests.test_inputs import NO_TF, REPO, env, needs_jax, python


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerascnn.training.fit import fit
    r = fit("lenet", "digits", epochs=2, batch_size=64, train_size=256, activation="relu", pool="max",
            distribute="mirrored", output=sys.argv[1], verbose=0)
    print(json.dumps({"replicas": r.config["replicas"], "loss": [row["loss"] for row in r.history],
                      "acc": r.test_accuracy}))
""")


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["loss"][1] < result["loss"][0]
    assert (tmp_path / "lenet.keras").exists()


WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from kerascnn.training.fit import fit
    r = fit("lenet", "digits", epochs=2, batch_size=64, activation="relu", pool="max", distribute="multi-worker",
            output=sys.argv[1], verbose=0)
    np.savez(sys.argv[2], *r.model.get_weights())
    print(json.dumps({"loss": [row["loss"] for row in r.history], "chief": r.chief, "paths": list(map(str, r.paths)),
                      "replicas": r.config["replicas"]}))
""")


def free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_on_two_processes(tmp_path):
    """Two workers on 127.0.0.1 (TF_CONFIG, one process each) train one model: the same weights on both,
    the losses of one process training the same global batches, and the run written once, by the chief."""
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
                   TMPDIR=str(temp), TF_CONFIG=json.dumps({"cluster": {"worker": cluster},
                                                           "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "out"),
                                       str(tmp_path / f"w{index}.npz")], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    chief, other = results
    assert chief["chief"] and not other["chief"] and chief["replicas"] == other["replicas"] == 2
    assert other["paths"] == [] and chief["loss"] == other["loss"]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) == 10 and all(np.array_equal(w0[k], w1[k]) for k in w0.files)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["lenet.best.keras", "lenet.history.csv", "lenet.history.json", "lenet.keras", "lenet.last.keras",
                     "lenet.run.json"]
    assert sorted(chief["paths"]) == sorted(str(tmp_path / "out" / f) for f in files)
    assert len(json.loads((tmp_path / "out" / "lenet.history.json").read_text())) == 2
    assert not list((tmp_path / "tmp1").iterdir())  # the other worker's files were removed
    one = fit("lenet", "digits", epochs=2, batch_size=64, activation="relu", pool="max", output=tmp_path / "one",
              verbose=0)
    assert chief["loss"] == pytest.approx([row["loss"] for row in one.history], rel=1e-2)


def test_multi_worker_needs_a_cluster(tmp_path, monkeypatch):
    from kerascnn.runtime.distribution import cluster_task, is_chief

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(KerasCNNError, match="multi-worker reads the cluster from TF_CONFIG, which is not set"):
        fit("lenet", "digits", epochs=1, distribute="multi-worker", output=tmp_path)
    for bad in ("{", '{"cluster": {"worker": ["a:1"]}}', '{"cluster": {"worker": ["a:1"]}, "task": {"type": '
                '"worker", "index": 1}}', '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}'):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(KerasCNNError, match="TF_CONFIG is not a cluster with this process's task in it"):
            cluster_task()
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", '
                                    '"index": 0}}')
    assert cluster_task() == ("worker", 0, 2, True) and not is_chief("multi-worker") and is_chief("mirrored")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", '
                                    '"index": 0}}')
    assert is_chief("multi-worker")


@needs_jax
def test_data_parallel_on_two_devices_ends_with_the_weights_of_one(tmp_path):
    """keras.distribution.DataParallel over two virtual CPU devices, without TensorFlow: the same weights as
    one device within 1e-5 (float32 sums in another order; measured 2e-7 on weights up to 0.3)."""
    code = """
        import sys
        from kerascnn.training.fit import fit
        r = fit("lenet", "digits", epochs=2, batch_size=64, train_size=640, augment="crop,flip", activation="relu",
                pool="max", distribute="data-parallel", output=sys.argv[1], verbose=1)
        assert sys.modules.get("tensorflow") is None
    """
    runs = {}
    for devices in (1, 2):
        proc = python(code, "jax", str(tmp_path / str(devices)),
                      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"DataParallel over {devices} device(s)" in proc.stdout
        runs[devices] = storage.load_model(tmp_path / str(devices) / "lenet.keras").get_weights()
    for a, b in zip(runs[1], runs[2]):
        np.testing.assert_allclose(a, b, atol=1e-5)


DATA_PARALLEL = """
    import json, sys
    import numpy as np
    from kerascnn.training.fit import fit
    r = fit("lenet", "digits", epochs=2, batch_size=64, train_size=640, augment="crop,flip", activation="relu",
            pool="max", distribute="data-parallel", output=sys.argv[1], verbose="auto")
    np.savez(sys.argv[2], *r.model.get_weights())
    assert sys.modules.get("tensorflow") is None
    print(json.dumps({"chief": r.chief, "paths": list(map(str, r.paths)), "loss": [row["loss"] for row in r.history],
                      "test": [r.test_loss, r.test_accuracy], "replicas": r.record["replicas"]}))
"""


def run_together(commands, timeout):
    """Start every (argv, env) at once and wait for all, killing them all when one runs past `timeout` s: a
    hang fails the test. Returns their (returncode, stdout, stderr)."""
    procs = [subprocess.Popen(argv, env=environ, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for argv, environ in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outputs = [p.communicate() for p in procs]
        pytest.fail(f"a process ran past {timeout} s; their stderr ends: " + " | ".join(e[-1500:] for _, e in outputs))


@needs_jax
@pytest.mark.slow
def test_data_parallel_on_two_processes_ends_with_the_weights_of_one_with_two_devices(tmp_path):
    """Two processes on 127.0.0.1 (KERAS_DISTRIBUTION_*, jax.distributed, one CPU device each, no TensorFlow)
    train one model on their halves of every batch: the weights, losses and test figures of one process with
    two devices, and the run written once, by process 0. Weights within 1e-6: a sum of two float32 gradients is
    the same in either order, so they agree exactly here (measured 0.0), but gloo's all-reduce need not sum as
    XLA's in-process one does; 1e-6 is a few float32 ulps of weights up to 0.3 over the 20 steps."""
    port = free_ports(1)[0]
    code = NO_TF + textwrap.dedent(DATA_PARALLEL)
    commands = []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir()
        commands.append(([sys.executable, "-c", code, str(tmp_path / f"out{index}"), str(tmp_path / f"w{index}.npz")],
                         env("jax", KERASCNN_DATA_DIR="", TMPDIR=str(tmp_path / f"tmp{index}"),
                             XLA_FLAGS="--xla_force_host_platform_device_count=1",
                             KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
                             KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(index))))
    commands.append(([sys.executable, "-c", code, str(tmp_path / "one"), str(tmp_path / "one.npz")],
                     env("jax", KERASCNN_DATA_DIR="", XLA_FLAGS="--xla_force_host_platform_device_count=2")))
    runs = run_together(commands, timeout=240)
    for returncode, _, err in runs:
        assert returncode == 0, err[-3000:]
    first, second, one = (json.loads(out.strip().splitlines()[-1]) for _, out, _ in runs)
    assert "DataParallel over 2 device(s), process 0 of 2" in runs[0][1]
    assert "this worker writes nothing" in runs[1][1]
    assert first["chief"] and not second["chief"] and second["paths"] == []
    assert first["replicas"] == second["replicas"] == one["replicas"] == 2
    assert first["loss"] == pytest.approx(one["loss"], rel=1e-6) and second["loss"] == first["loss"]
    assert first["test"] == pytest.approx(one["test"], rel=1e-6) and second["test"] == first["test"]
    w0, w1, w = (np.load(tmp_path / name) for name in ("w0.npz", "w1.npz", "one.npz"))
    assert len(w.files) == 10
    for key in w.files:
        np.testing.assert_array_equal(w0[key], w1[key])
        np.testing.assert_allclose(w0[key], w[key], rtol=0, atol=1e-6)
    written = sorted(p.name for p in (tmp_path / "out0").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "one").iterdir()) and "lenet.keras" in written
    assert not (tmp_path / "out1").exists() and not list((tmp_path / "tmp1").iterdir())
    np.testing.assert_array_equal(storage.load_model(tmp_path / "out0" / "lenet.keras").get_weights()[0], w0["arr_0"])


def test_each_process_feeds_its_rows_of_the_batches_one_process_would_make():
    x = np.arange(70 * 4 * 4).reshape(70, 4, 4, 1).astype(np.uint8)
    y = np.arange(70) % 10
    options = dict(batch_size=32, epochs=1, seed=3, augment=("crop", "flip"), multiple=4,
                   tricks=Tricks(mixup=0.2), num_classes=10)
    whole = host.TrainingBatches(x, y, **options)
    parts = [host.TrainingBatches(x, y, part=(i, 2), **options) for i in range(2)]
    assert whole.steps == parts[0].steps == 3
    for step in range(whole.steps):
        (images, params), labels = whole.batch(0, step)
        (i0, p0), l0 = parts[0].batch(0, step)
        (i1, p1), l1 = parts[1].batch(0, step)
        assert len(i0) == len(i1) == len(images) // 2
        for a, b0, b1 in ((images, i0, i1), (params, p0, p1), (labels, l0, l1)):
            np.testing.assert_array_equal(a, np.concatenate([b0, b1]))
    (images, _), labels, weights = host.Batches(x, y, batch_size=32, multiple=4)[2]  # 6 images and 2 of padding
    halves = [host.Batches(x, y, batch_size=32, multiple=4, part=(i, 2))[2] for i in range(2)]
    assert len(weights) == 8 and [len(h[1]) for h in halves] == [4, 4]
    for a, b0, b1 in ((images, halves[0][0][0], halves[1][0][0]), (labels, halves[0][1], halves[1][1]),
                      (weights, halves[0][2], halves[1][2])):
        np.testing.assert_array_equal(a, np.concatenate([b0, b1]))


def test_multi_process_settings_are_checked(tmp_path, monkeypatch):
    from kerascnn.runtime.distribution import PROCESS_VARIABLES, process_cluster

    for name in PROCESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert process_cluster() is None

    def setting(addresses="10.0.0.1:1234", count="2", index="1"):
        for name, value in zip(PROCESS_VARIABLES, (addresses, count, index)):
            monkeypatch.setenv(name, value)

    setting()
    assert process_cluster() == ("10.0.0.1:1234", 2, 1)
    setting(addresses="10.0.0.1:1234,10.0.0.2:1234")
    assert process_cluster() == ("10.0.0.1:1234", 2, 1)
    for bad, message in [(dict(index="2"), "KERAS_DISTRIBUTION_PROCESS_ID=2 is not one of the "
                                           "KERAS_DISTRIBUTION_NUM_PROCESSES=2 processes: number them 0 to 1"),
                         (dict(index="-1"), "KERAS_DISTRIBUTION_PROCESS_ID=-1 is not one of"),
                         (dict(count="two"), "KERAS_DISTRIBUTION_NUM_PROCESSES=two is not a number of processes"),
                         (dict(count="0"), "KERAS_DISTRIBUTION_NUM_PROCESSES=0 is not a number of processes"),
                         (dict(addresses="10.0.0.1"), "KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1 is not process 0's "
                                                      "host:port"),
                         (dict(addresses="a:1,b:1,c:1"), "or one host:port per process, 2 in all"),
                         (dict(index=""), "KERAS_DISTRIBUTION_PROCESS_ID not set: a multi-process run reads all "
                                          "three")]:
        setting(**bad)
        with pytest.raises(KerasCNNError, match=re.escape(message)):
            process_cluster()
    setting()
    with pytest.raises(KerasCNNError, match=re.escape("start a multi-process run, which needs "
                                                      "distribute='data-parallel' on the jax backend (here: "
                                                      "distribute not set")):
        fit("lenet", "digits", epochs=1, output=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_process_writing_elsewhere_resumes_the_recordings_of_the_chief(tmp_path):
    """A worker (or a data-parallel process but 0) writes into a scratch folder but continues the step log and
    activation records of the run it resumes, the chief's: in progress, or beside the finished run."""
    from kerascnn.runs.files import RunFiles
    from kerascnn.training.fit import RunFolder

    chief, scratch = RunFiles(tmp_path / "runs", "lenet"), RunFiles(tmp_path / "scratch", "lenet")
    finished = RunFolder(scratch, {"epoch": 2}, chief.checkpoint("last"), resumes=chief)
    assert finished.recording("steps") == chief.steps_csv and finished.recording("activations") == chief.activations
    running = RunFolder(scratch, {"epoch": 1}, chief.in_progress("last"), resumes=chief)
    assert running.recording("steps") == chief.in_progress("steps")
    assert RunFolder(chief, {"epoch": 1}, chief.in_progress("last")).recording("steps") == chief.in_progress("steps")
