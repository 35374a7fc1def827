"""kerascnn.distribution: training under tf.distribute (mirrored on two logical CPUs, multi-worker on two
processes) and keras.distribution (data-parallel on two virtual JAX devices), and the cluster checks."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerascnn import io
from kerascnn.errors import KerasCNNError
from kerascnn.train import fit
from tests.test_inputs import needs_jax, python


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerascnn.train import fit
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
    from kerascnn.train import fit
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
    from kerascnn.distribution import cluster_task, is_chief

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
        from kerascnn.train import fit
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
        runs[devices] = io.load_model(tmp_path / str(devices) / "lenet.keras").get_weights()
    for a, b in zip(runs[1], runs[2]):
        np.testing.assert_allclose(a, b, atol=1e-5)
