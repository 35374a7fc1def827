"""Sections "archs" and "side-by-side" of performance.py: images/s of fit's
own path for every architecture at its CPU size and batch size, against a
bare `model.fit`; and LeNet and ResNet-18 through kerascnn, a bare
`model.fit` and a plain PyTorch loop (eager and torch.compile), with the
share of the machine's sgemm rate each reaches.
"""

from backends import cases, framework_params, kerascnn_params
from report import failures, number, rate, ratio, table

ARCHS = ("lenet", "alexnet", "vgg11", "vgg16", "nin", "googlenet", "resnet18", "mobilenet")  # families.ARCH_NAMES
FASHION_TRAIN = 54_000  # Fashion-MNIST's training images after fit's default 10% validation split


def archs(runner, only_archs=None):
    """Every architecture through fit's stages at its CPU size and batch size."""
    from kerascnn.config.families import FAMILIES

    b = runner.budget
    rows = []
    for arch in only_archs or ARCHS:
        family = FAMILIES[arch]
        size = 28 if family.default_size is None else family.min_size  # config.image_size without a GPU
        batch = b.batch(family.batch_size)
        options = {**({"batch_size": batch} if batch != family.batch_size else {})}
        r = runner.measure("kerascnn_fit", {"arch": arch, "options": options, "train_images": b.steps * batch,
                                            "epochs": b.epochs}, label=arch)
        row = {"arch": arch, "size": r.get("image_size", size), "batch": batch, **r}
        if arch != "lenet":  # LeNet's is side-by-side's (its ReLU variant, as a user writes it)
            row["bare"] = runner.measure("bare_fit", {"net": arch, "size": row["size"], "batch": batch,
                                                      "train_images": b.steps * batch, "epochs": b.epochs},
                                         label=f"{arch} bare model.fit")
        rows.append(row)
    return {"rows": rows, "steps": b.steps, "repeats": b.repeats}


def side_by_side(runner):
    """LeNet and ResNet-18: kerascnn, bare model.fit, PyTorch eager and compiled."""
    b = runner.budget
    nets = {}
    for net, (size, batch, images) in cases(b).items():
        p = framework_params(net, size, batch, images, b)
        compiled = b.compile_resnet or net == "lenet"
        nets[net] = {
            "size": size, "batch": batch,
            "kerascnn": runner.measure("kerascnn_fit", kerascnn_params(net, size, batch, images, b),
                                       label=f"{net} kerascnn"),
            "bare": runner.measure("bare_fit", p, label=f"{net} bare model.fit"),
            "torch_eager": runner.measure("raw_torch", {**p, "compile": False}, "torch", label=f"{net} torch eager"),
            "torch_compile": runner.measure("raw_torch", {**p, "compile": True}, "torch", label=f"{net} torch.compile")
            if compiled else {"error": "skipped (--quick)"},
        }
    return {"nets": nets, "lenet_macs": lenet_macs(), "repeats": b.repeats}


def lenet_macs(size=28, kernel=5, channels=(6, 16), dense=(120, 84), classes=10):
    """LeNet's forward multiply-accumulates per image, layer by layer:
    conv1 keeps the size, each pooling halves it, conv2 is valid."""
    c1, c2 = channels
    after_conv2 = size // 2 - kernel + 1
    flat = (after_conv2 // 2) ** 2 * c2
    return {f"conv1 ({c1}@{kernel}x{kernel} same, {size}x{size} out)": size * size * c1 * kernel * kernel,
            f"conv2 ({c2}@{kernel}x{kernel} valid, {after_conv2}x{after_conv2} out)":
                after_conv2 * after_conv2 * c2 * kernel * kernel * c1,
            f"fc1 ({flat} -> {dense[0]})": flat * dense[0], f"fc2 ({dense[0]} -> {dense[1]})": dense[0] * dense[1],
            f"output ({dense[1]} -> {classes})": dense[1] * classes}


def steps_ratio(k, bare):
    """kerascnn's steps alone (its epoch less what comes after the last
    batch) against a bare fit's whole epochs."""
    ok = k and bare and "error" not in k and "error" not in bare and "steps_images_per_s" in k
    return f"{k['steps_images_per_s'] / bare['images_per_s']:.2f}×" if ok else "–"


def full_epoch_ratio(k, bare, images=FASHION_TRAIN):
    """kerascnn against a bare fit over an epoch of `images`: kerascnn's
    steps at its steps-only rate plus its seconds after the steps."""
    if not k or not bare or "error" in k or "error" in bare or "steps_images_per_s" not in k:
        return "–"
    return f"{(images / bare['images_per_s']) / (images / k['steps_images_per_s'] + k['after_steps_s']):.2f}×"


def training_gflops(r):
    """GFLOP/s of training: images/s x 3 x forward FLOPs (2 x MACs)."""
    if not r or "error" in r or "forward_macs" not in r:
        return None
    return r["images_per_s"] * 3 * 2 * r["forward_macs"] / 1e9


def render_archs(s):
    sgemm = s["sgemm"].get("gflops")
    rows = []
    for r in s["rows"]:
        gflops = training_gflops(r)
        rows.append([r["arch"], r["size"], r["batch"], number(r.get("params")),
                     number(2 * r["forward_macs"] / 1e6 if "forward_macs" in r else None), rate(r), number(gflops),
                     f"{100 * gflops / sgemm:.0f}%" if gflops and sgemm else "–",
                     rate(r["bare"]) if "bare" in r else "side by side", ratio(r, r.get("bare")),
                     steps_ratio(r, r.get("bare")), full_epoch_ratio(r, r.get("bare")),
                     number(r.get("first_epoch_s")), number(r.get("after_steps_s")), number(r.get("peak_rss_mb"))])
    return (f"Each architecture at the size and batch size `kerascnn fit` picks on a CPU (the family's smallest "
            f"size, 28 px for LeNet), with its family's defaults, on {s['steps']} batches of Fashion-MNIST per "
            f"epoch: one warm-up epoch, then the median of {s['repeats']} timed epochs. The path is fit's own "
            "stages (`kerascnn.training.plan` and `kerascnn.training.fit`: load_data, resolve_settings, open_run_folder, "
            "build_or_resume, make_callbacks, train), without the final test evaluation and save; images/s counts whole "
            "epochs, of which \"after the steps\" is what an epoch spends after its last batch (the checkpoint "
            "`last.keras`, history). GFLOP/s counts training as 3× the forward pass of the "
            "convolutions and dense layers (2 FLOPs a multiply-accumulate). The bare model.fit is the same "
            "network from kerascnn's builder, ending in a softmax, trained by `model.fit` on arrays in memory "
            "with Keras' defaults (AdamW, whole epochs timed); LeNet's is in the next section. The timed epochs "
            f"are short ({s['steps']} batches), so an epoch's fixed cost (the checkpoint: parameters and optimizer "
            "state, fsync-ed) weighs more than in a real one; the next column puts the same measurements "
            "into a whole Fashion-MNIST epoch of 54,000 images: the steps at the measured steps-only rate plus the "
            "measured seconds after them, against the bare fit at its rate. \"Steps alone\" leaves the fixed "
            "cost out.\n\n"
            + table(["arch", "px", "batch", "parameters", "forward MFLOP/image", "images/s", "training GFLOP/s",
                     "of sgemm", "bare model.fit images/s", "kerascnn / bare", "steps alone / bare",
                     "54,000-image epochs",
                     "warm-up epoch s",
                     "after the steps s", "peak RSS MB"], rows)
            + failures(*((r["arch"], r) for r in s["rows"]), *((f"{r['arch']} bare", r["bare"])
                                                               for r in s["rows"] if "bare" in r)))


def render_side_by_side(s):
    header = ["network", "kerascnn fit path", "bare model.fit", "PyTorch eager", "torch.compile",
              "kerascnn / bare", "kerascnn / torch eager", "kerascnn / torch.compile"]
    rows, details, failed = [], [], []
    for net, n in s["nets"].items():
        k, bare, eager, comp = n["kerascnn"], n["bare"], n["torch_eager"], n["torch_compile"]
        rows.append([f"{net} {n['size']} px b{n['batch']}", rate(k), rate(bare), rate(eager), rate(comp),
                     ratio(k, bare), ratio(k, eager), ratio(k, comp)])
        for label, r in (("kerascnn", k), ("bare model.fit", bare), ("PyTorch eager", eager),
                         ("torch.compile", comp)):
            failed.append((f"{net}, {label}", r))
            if "error" not in r:
                details.append([f"{net}, {label}", f"{r['images']:,}", rate(r), number(r.get("first_epoch_s")),
                                "on" if r.get("jit_compile") else "off", number(r.get("params")),
                                number(r.get("peak_rss_mb"))])
    return (
        f"The same two networks four ways, Fashion-MNIST, AdamW (lr 1e-3, weight decay 0.004), one warm-up epoch "
        f"then the median of {s['repeats']} timed epochs:\n\n"
        "- **kerascnn fit path**: fit's stages as in section 1 (`--activation relu --pool max` for LeNet, "
        "`-b` and `--image-size` as shown), tf.data pipeline, TensorFlow backend, `--jit auto` (XLA off on a CPU), `--steps-per-execution` "
        "auto (16 steps a call on TensorFlow, 1 elsewhere), whole epochs timed (the checkpoint included);\n"
        "- **bare model.fit**: what a user writes: LeNet as a `keras.Sequential` (conv 6@5x5 same → max pool "
        "→ conv 16@5x5 valid → max pool → 120 → 84 → 10, ReLU, softmax), ResNet-18 from kerascnn's builder "
        "with a softmax; `compile(optimizer=\"adamw\", loss=\"sparse_categorical_crossentropy\", "
        "metrics=[\"accuracy\"])`, "
        "`fit(x, y, batch_size=...)` on NumPy arrays in memory (images normalized, zero-padded to 32 px for "
        "ResNet-18), Keras' defaults otherwise (`jit_compile=\"auto\"`, shuffling);\n"
        "- **PyTorch eager**: the same network in `torch.nn` (ResNet-18 written out as torchvision's resnet18, "
        "checked at 11,689,512 parameters for 3 channels and 1000 classes; torchvision is not installed), NCHW "
        "tensors in memory, `torch.optim.AdamW`, full batches only;\n"
        "- **torch.compile**: the same loop with `torch.compile(model)` (its compilation is in the warm-up epoch).\n\n"
        + table(header, rows)
        + "\n\nEvery configuration (images a timed epoch; the warm-up epoch includes compilation or tracing):\n\n"
        + table(["configuration", "images an epoch", "images/s", "warm-up epoch s", "jit", "parameters",
                 "peak RSS MB"], details)
        + render_flops(s)
        + failures(*failed))


def render_flops(s):
    """The sgemm rate, LeNet's FLOPs layer by layer, and the share of sgemm each network reaches."""
    sgemm = s["sgemm"]
    macs = s["lenet_macs"]
    total = sum(macs.values())
    flops = [[name, f"{v:,}"] for name, v in macs.items()] + [["**forward, total**", f"**{total:,}**"]]
    shares = []
    for net, n in s["nets"].items():
        gflops = training_gflops(n["kerascnn"])
        if gflops and sgemm["gflops"]:
            shares.append([net, number(2 * n["kerascnn"]["forward_macs"] / 1e6),
                           number(6 * n["kerascnn"]["forward_macs"] / 1e6), rate(n["kerascnn"]), number(gflops),
                           f"{100 * gflops / sgemm['gflops']:.1f}%"])
    check = {n: r["kerascnn"].get("forward_macs") for n, r in s["nets"].items()}
    agree = "agrees with" if check.get("lenet") == total else f"differs from ({check.get('lenet')})"
    return (
        f"\n\n**The machine's sgemm rate**, measured in the same run: {number(sgemm['gflops'])} GFLOP/s "
        f"(float32 {sgemm['numpy'].get('n')}×{sgemm['numpy'].get('n')} matrix product, the best of 10, each "
        f"library in its own process: NumPy {number(sgemm['numpy'].get('best'))} (median "
        f"{number(sgemm['numpy'].get('median'))}), torch {number(sgemm['torch'].get('best'))} (median "
        f"{number(sgemm['torch'].get('median'))}) on {sgemm['torch'].get('threads')} threads; the higher "
        "is taken).\n\n"
        "**LeNet's FLOPs**, counted per layer (multiply-accumulates of one 28×28 image's forward pass; bias, "
        "activations and pooling left out):\n\n" + table(["layer", "MACs"], flops)
        + f"\n\nThe count from the built Keras model {agree} this. Training ≈ 3× the forward pass "
        f"(forward, gradient of the activations, gradient of the weights), 2 FLOPs a MAC:\n\n"
        + table(["network", "forward MFLOP/image", "training MFLOP/image", "kerascnn images/s",
                 "training GFLOP/s", "of sgemm"], shares))
