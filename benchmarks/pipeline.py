"""Section "pipeline" of performance.py: kerascnn's tf.data training pipeline
alone at 32, 96 and 224 px (plain, with crop and flip, and built five other
ways) beside ResNet-18's training step at that size.
"""

import time

from harness import worker
from loops import model_facts
from report import failures, number, rate, ratio, table

@worker
def pipeline(size, batch, steps, augment):
    """make_training_pipeline over Fashion-MNIST's 60,000 training images,
    iterated without a model: images/s after 5 warm-up batches."""
    from kerascnn.data.tf_augment import Augmenter
    from kerascnn.data.datasets import load_dataset
    from kerascnn.data.tf_pipeline import make_training_pipeline

    data = load_dataset("fashion_mnist", val_size=0)
    mean, std = data.stats()
    augmenter = Augmenter(augment.split(","), size) if augment else None
    ds, _ = make_training_pipeline(data.x_train, data.y_train, input_shape=(size, size, 1), mean=mean, std=std,
                                   batch_size=batch, epochs=2, augment=augmenter)
    return pipeline_rate(ds, batch, steps)


def pipeline_rate(ds, batch, steps):
    """Images/s of iterating `ds` for `steps` batches after 5 warm-up ones."""
    batches = iter(ds)
    for _ in range(5):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "images": steps * batch}


PIPELINE_VARIANTS = ("kerascnn", "map serial", "no prefetch", "resize each image", "cache resized")


@worker
def pipeline_variant(size, batch, steps, variant):
    """make_training_pipeline's batches (plain, Fashion-MNIST's 60,000
    images) built another way, iterated without a model: kerascnn's own
    (gather a batch, scale and resize it in one op, normalize; map on
    AUTOTUNE threads; prefetch AUTOTUNE), the map on one thread, without
    prefetch, each image resized on its own before batching, or every image
    resized once beforehand (uint8, cached in memory) and gathered."""
    import numpy as np
    import tensorflow as tf

    from kerascnn.data.datasets import load_dataset

    from kerascnn.data.sampling import epoch_order

    from kerascnn.data.device_transforms import normalize, scale_and_resize
    from kerascnn.data.tf_pipeline import make_training_pipeline

    data = load_dataset("fashion_mnist", val_size=0)
    mean, std = data.stats()
    facts = {}
    if variant == "kerascnn":
        ds, _ = make_training_pipeline(data.x_train, data.y_train, input_shape=(size, size, 1), mean=mean, std=std,
                                       batch_size=batch, epochs=2)
    else:
        images, labels = data.x_train, data.y_train.astype("int32")
        if variant == "cache resized":
            start = time.perf_counter()
            images = np.concatenate([np.round(np.clip(scale_and_resize(images[i:i + 2048], (size, size))
                                                      .numpy() * 255, 0, 255)).astype(np.uint8)
                                     for i in range(0, len(images), 2048)])
            facts = {"cache_s": round(time.perf_counter() - start, 2), "cache_mb": round(images.nbytes / 2**20)}
        images, labels = tf.constant(images), tf.constant(labels)
        idx = epoch_order(len(data.x_train), 0)
        parallel = None if variant == "map serial" else tf.data.AUTOTUNE

        def prep(i):
            x = tf.cast(tf.gather(images, i), tf.float32) / 255.0 if variant == "cache resized" else \
                scale_and_resize(tf.gather(images, i), (size, size))
            return normalize(x, 1, mean, std), tf.gather(labels, i)

        if variant == "resize each image":
            def one(i):
                x = scale_and_resize(tf.gather(images, i)[None], (size, size))[0]
                return x, tf.gather(labels, i)

            ds = tf.data.Dataset.from_tensor_slices(idx).map(one, num_parallel_calls=parallel).batch(batch)
            ds = ds.map(lambda x, y: (normalize(x, 1, mean, std), y), num_parallel_calls=parallel)
        else:
            ds = tf.data.Dataset.from_tensor_slices(idx).batch(batch).map(prep, num_parallel_calls=parallel)
        ds = ds.repeat()
        if variant != "no prefetch":
            ds = ds.prefetch(tf.data.AUTOTUNE)
    return {**pipeline_rate(ds, batch, steps), **facts}


@worker
def train_step(arch, size, batch, steps):
    """kerascnn's model compiled as fit compiles it, trained with
    train_on_batch on one batch already in memory: the training step with
    no input pipeline."""
    import numpy as np

    from kerascnn.models import build_model
    from kerascnn.optim.optimizers import make_optimizer
    from kerascnn.training.plan import compile_model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    model = build_model(arch, input_shape=(size, size, 1), num_classes=10)
    compile_model(model, make_optimizer("adamw"))
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), **model_facts(model)}


def section(runner):
    """make_training_pipeline alone, beside ResNet-18's training step."""
    b = runner.budget
    batch = b.batch(64)
    rows = []
    for size in b.pipeline_sizes:
        rows.append({
            "size": size, "batch": batch,
            "plain": runner.measure("pipeline", {"size": size, "batch": batch, "steps": b.pipeline_steps,
                                                 "augment": None}, label=f"pipeline {size} px"),
            "augmented": runner.measure("pipeline", {"size": size, "batch": batch, "steps": b.pipeline_steps,
                                                     "augment": "crop,flip"}, label=f"pipeline {size} px crop,flip"),
            "step": runner.measure("train_step", {"arch": "resnet18", "size": size, "batch": batch,
                                                  "steps": b.consumer_steps}, label=f"resnet18 step {size} px"),
            "variants": {v: runner.measure("pipeline_variant", {"size": size, "batch": batch,
                                                                "steps": b.pipeline_steps, "variant": v},
                                           label=f"pipeline {size} px, {v}") for v in PIPELINE_VARIANTS},
        })
    return {"rows": rows, "steps": b.pipeline_steps, "consumer_steps": b.consumer_steps}


def render(s):
    rows, failed = [], []
    for r in s["rows"]:
        rows.append([r["size"], r["batch"], rate(r["plain"]), rate(r["augmented"]), rate(r["step"]),
                     ratio(r["augmented"], r["step"])])
        failed += [(f"{r['size']} px pipeline", r["plain"]), (f"{r['size']} px crop,flip", r["augmented"]),
                   (f"{r['size']} px ResNet-18 step", r["step"])]
    return (
        "kerascnn's `make_training_pipeline` over Fashion-MNIST's 60,000 training images (gather, scale, resize "
        "28 → size, optionally random crop after zero padding and horizontal flip, normalize, batch, prefetch), "
        f"iterated in TensorFlow without a model: {s['steps']} batches after 5 warm-up ones. Beside it, "
        "ResNet-18's training step at that size (`train_on_batch` on one batch in memory, TensorFlow backend, "
        f"{s['consumer_steps']} steps after one warm-up): what the pipeline has to keep up with. Measured apart, "
        "each with both cores; in training they share them, so a ratio near 1 already means the pipeline takes "
        "time from the step.\n\n"
        + table(["px", "batch", "pipeline images/s", "with crop,flip", "ResNet-18 step images/s",
                 "(crop,flip) / step"], rows)
        + render_pipeline_variants(s)
        + failures(*failed))


def render_pipeline_variants(s):
    rows = []
    for r in s["rows"]:
        variants = r.get("variants")
        if not variants:
            continue
        cached = variants.get("cache resized", {})
        rows.append([r["size"]] + [f"{rate(variants[v])} ({ratio(variants[v], variants['kerascnn'])})"
                                   for v in PIPELINE_VARIANTS]
                    + [f"{number(cached.get('cache_s'))} s, {number(cached.get('cache_mb'))} MB"])
    if not rows:
        return ""
    return ("\n\nThe same plain batches built other ways, each against kerascnn's (in brackets): the map on "
            "one thread instead of AUTOTUNE's, no prefetch, each image resized on its own before batching "
            "instead of one resize a batch, and every image resized once beforehand and kept (uint8) in "
            "memory, whose one-time cost is the last column:\n\n"
            + table(["px", *PIPELINE_VARIANTS, "caching cost"], rows))
