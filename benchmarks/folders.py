"""A folder of your own images (`kerascnn fit --dataset DIR`): how fast the
first run decodes it, and how fast later runs start from the cache.

    python benchmarks/folders.py            # about a minute on 2 cores
    python benchmarks/folders.py --quick    # 1,000 images: a smoke test

The folder: the CIFAR-10 subset's 10,000 training images in ../shared/data
(32x32 RGB; skipped when that folder is absent), written as one folder per
class, half PNG and half JPEG (quality 95), by this script, outside the
timing. The first run is `kerascnn.data.folders.load_folder` with an empty
cache: list and fingerprint the folder, read every header, decode each
image, fit it to the stored side and write the cache; images per second is
the images over that whole time. A later run is the same call with the
cache in place (listing and fingerprint included): the median of 3.

Memory: the same folder stored at 224x224 (a 1.4 GiB cache), then, in a
fresh process per backend, `make_plan` on it (LeNet at 224, batch 64) and
one epoch of its training batches and the test batches read through
`plan.loader`; the process's private resident memory (RssAnon, sampled
every 5 ms) at its peak, less what it held before (after the same reading
of the 32x32 cache, so that imports are not counted), beside the cache's
size. Into benchmarks/results/folders.json.
"""

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import RESULTS_DIR, data_dir, write_rows

RESULTS = RESULTS_DIR / "folders.json"


def write_folder(root, x, y, class_names):
    """`x` (uint8 NHWC) as root/<class>/<i>.png or .jpg, alternating."""
    from PIL import Image

    for name in class_names:
        (root / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(x, y)):
        path = root / class_names[int(label)] / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(image).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(image).save(path)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(count, side=224, repeats=3):
    """Seconds of a first (decoding) and a cached load of a folder of `count` images."""
    import numpy as np

    source = data_dir()  # exits, saying so, without ../shared/data
    if not (source / "cifar10").is_dir():
        print(f"no cifar10/ in {source}: skipped", file=sys.stderr)
        return None
    with np.load(Path(source) / "cifar10" / "cifar10-subset.npz") as z:
        x, y, names = z["x_train"][:count], z["y_train"][:count], [str(n) for n in z["class_names"]]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "cifar10-folder"
        write_folder(root, x, y, names)
        os.environ["KERASCNN_CACHE_DIR"] = str(Path(scratch) / "cache")
        for module in ("PIL.Image", "sklearn.model_selection"):  # imported before the timing, as a run has them
            importlib.import_module(module)
        from kerascnn.data import folders

        first, data = timed(lambda: folders.load_folder(root))
        later = [timed(lambda: folders.load_folder(root))[0] for _ in range(repeats)]
        cache_bytes = sum(p.stat().st_size for p in (Path(scratch) / "cache").rglob("*.npy"))
        images = len(data.x_train) + len(data.x_test)
        memory = measure_memory(root, side)
    return {"memory": memory, **{"images": images, "image_shape": list(data.x_train.shape[1:]),
                                 "formats": "half PNG, half JPEG q95",
            "decode_workers": folders.WORKERS, "first_run_s": round(first, 2),
            "decoded_images_per_s": round(images / first), "cached_start_s": round(statistics.median(later), 3),
            "cached_runs_s": [round(t, 3) for t in later], "cache_mb": round(cache_bytes / 2**20, 1),
            "first_over_cached": round(first / statistics.median(later), 1)}}


def measure_memory(root, side):
    """{backend: peak private memory growth} while a plan reads the folder
    stored at `side` (see the docstring), with the cache's size."""
    from kerascnn.data import folders

    data = folders.load_folder(root, image_size=side)  # the cache at this side, written here
    cache_mb = sum(p.stat().st_size for p in folders.cache_dir().joinpath("folders").glob(f"*-{side}-*.npy")) / 2**20
    row = {"image_size": side, "cache_mb": round(cache_mb, 1), "batch_size": 64,
           "images_read": len(data.x_train) + len(data.x_test)}
    for backend in ("tensorflow", "jax", "torch"):
        env = {**os.environ, "KERAS_BACKEND": backend}
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(root), str(side)], env=env,
                             capture_output=True, text=True, check=True).stdout
        row[backend] = json.loads(out.strip().splitlines()[-1])
    return row


def rss_anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


def memory_probe(root, side):
    """In its own process: peak RssAnon growth over make_plan and one epoch of batches."""
    from kerascnn.training.plan import make_plan

    peak, stop = [rss_anon_mb()], threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(max(peak[-1], rss_anon_mb()))
            time.sleep(0.005)

    def read(size):
        plan = make_plan("lenet", str(root), {"image_size": size, "batch_size": 64, "epochs": 1, "val_size": 0})
        return sum(1 for _ in plan.loader("train")) + sum(1 for _ in plan.loader("test"))

    read(32)  # every import and code path warmed on the 32x32 cache: what grows after is the data's
    before = rss_anon_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    batches = read(side)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    print(json.dumps({"before_mb": round(before), "peak_growth_mb": round(max(peak) - before), "batches": batches,
                      "seconds": round(seconds, 1)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, results not kept")
    parser.add_argument("--memory-probe", nargs=2, metavar=("FOLDER", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
    row = measure(1000, 64) if args.quick else measure(10_000)
    if row is None:
        return
    print(row)
    if not args.quick:
        write_rows("folders.py", [row], RESULTS)


if __name__ == "__main__":
    main()
