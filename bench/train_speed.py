#!/usr/bin/python3
"""Training speed of our train_teacher against the same training written in PyTorch.

Trains one model both ways on the same images for the same number of epochs and prints
images/second (training steps only: loading, augmentation, forward, backward, optimiser step;
validation excluded) and their ratio:
  - ours:    build/bin/train_teacher on a copy of the image store with two extra splits,
             bench_train (--images rows of the train split, seeded) and bench_val (256 rows of val);
             its per-epoch images_per_second from <out>.metrics.jsonl;
  - PyTorch: tools/mlfd_torch.py's MLFDResNet (the same network, same parameter names and init
             scheme), the same rows read from the store with h5py, the same augmentation (zero pad
             + random crop) and normalisation in a torch DataLoader with the same worker count,
             torch.set_num_threads(--threads), SGD (Nesterov, weight decay off for biases and norm
             parameters), per-step cosine learning rate, label-smoothed cross-entropy, and the
             same per-step loss/accuracy bookkeeping.
The default model is the demo teacher recipe (resnet18 --small-stem --width 0.25 --embed-dim 128,
SGD lr 0.1 momentum 0.9 Nesterov, weight decay 5e-4, batch 128, pad 2) on Fashion-MNIST (28x28x1).

Usage: train_speed.py [--store S] [--images K] [--epochs E] [--threads T] [--workers W] [...]
Example: /usr/bin/python3 bench/train_speed.py --images 10240 --epochs 3 --threads 2 --workers 2
(bench/train_speed.sh runs it with these defaults; docs/interop.md has measured numbers.)
"""

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mlfd_deps  # noqa: E402 - standard library only

if __name__ == "__main__":  # one line instead of a traceback under a python3 without them
    mlfd_deps.require("train_speed.py", ["numpy", "h5py", "torch"])

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mlfd_torch as mt  # noqa: E402


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_bench_store(src, dst, images, seed):
    """Copies the store and adds splits bench_train (images rows of train) and bench_val."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        train = f["splits/train"][()]
        if images > len(train):
            raise SystemExit("train_speed: --images %d, but %s has only %d train images" %
                             (images, src, len(train)))
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(train, images, replace=False)).astype(np.int64)
        val = f["splits/val"][()] if "splits/val" in f else f["splits/test"][()]
        vrows = np.sort(rng.choice(val, min(256, len(val)), replace=False)).astype(np.int64)
        for name in ("bench_train", "bench_val"):
            if "splits/" + name in f:
                del f["splits/" + name]
        f.create_dataset("splits/bench_train", data=rows)
        f.create_dataset("splits/bench_val", data=vrows)
        return {"rows": rows, "images": f["images"][()][rows], "labels": f["labels"][()][rows],
                "mean": list(f.attrs["mean"]), "std": list(f.attrs["std"]),
                "classes": int(len(f["class_names"])), "channels": int(f.attrs["channels"])}


def train_teacher_command(args, store, out, train_split="bench_train", threads=None, epochs=None):
    """The train_teacher command of the benchmark's recipe (args: this script's options)."""
    return [os.path.join(args.bin, "train_teacher"), "-v", "0", "--threads", str(threads or args.threads),
            "--device", "cpu", "--workers", str(args.workers), "--arch", args.arch,
            "--width", str(args.width), "--small-stem=%d" % args.small_stem,
            "--embed-dim", str(args.embed_dim), "--optimizer", "sgd", "--lr", str(args.lr),
            "--momentum", "0.9", "--nesterov=1", "--weight-decay", str(args.weight_decay),
            "--batch-size", str(args.batch_size), "--pad", str(args.pad), "--epochs", str(epochs or args.epochs),
            "--label-smoothing", "0.1", "--schedule", "cosine", "--seed", "0",
            "--train-split", train_split, "--val-split", "bench_val", "--out", out, store]


def run_ours(args, store, workdir, channels_last=False):
    out = os.path.join(workdir, "ours_cl.h5" if channels_last else "ours.h5")
    cmd = train_teacher_command(args, store, out)
    if channels_last:
        cmd[1:1] = ["--memory-format", "channels-last"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("train_speed: train_teacher failed (exit %d): %s" % (r.returncode, r.stderr.strip()))
    wall = time.time() - t0
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    with open(out[:-3] + ".metrics.jsonl") as f:
        epochs = [json.loads(line) for line in f if line.strip()]
    return {"command": " ".join(cmd), "wall_seconds": wall,
            "mean_images_per_second": summary["train_images_per_second"],
            "epochs": [{"images_per_second": e["images_per_second"], "seconds": e["train_seconds"]}
                       for e in epochs]}


class PadCropDataset(torch.utils.data.Dataset):
    """uint8 H x W x C images -> zero pad + random crop -> normalised float C x H x W (as the C++
    loader: x * 1/(255 std) + (-mean/std), float32)."""

    def __init__(self, images, labels, mean, std, pad):
        self.images, self.labels, self.pad = images, labels, pad
        self.scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32)
        self.shift = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        if self.pad > 0:
            h, w = img.shape[:2]
            p = self.pad
            padded = np.zeros((h + 2 * p, w + 2 * p, img.shape[2]), dtype=np.uint8)
            padded[p:p + h, p:p + w] = img
            y, x = random.randint(0, 2 * p), random.randint(0, 2 * p)
            img = padded[y:y + h, x:x + w]
        out = img.astype(np.float32) * self.scale + self.shift
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), int(self.labels[i])


def run_pytorch(args, data, channels_last=False):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    model = mt.MLFDResNet(args.arch, in_channels=data["channels"], head_classes=[data["classes"]],
                          small_stem=args.small_stem, width=args.width, embed_dim=args.embed_dim)
    if channels_last:  # PyTorch's best CPU setting for convolutions (oneDNN's blocked layouts)
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    ds = PadCropDataset(data["images"], data["labels"], data["mean"], data["std"], args.pad)
    # prefetch_factor 2 per worker = the C++ loader's 4 batches ahead with 2 workers.
    extra = {"persistent_workers": True, "prefetch_factor": 2} if args.workers > 0 else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, **extra)
    steps = len(loader)
    total = steps * args.epochs
    epochs = []
    step = 0
    for _ in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        images = correct = 0
        loss_sum = 0.0
        for x, y in loader:
            lr = args.lr * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))) / 2
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            z = model(x)
            loss = F.cross_entropy(z, y, label_smoothing=0.1)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise SystemExit("train_speed: PyTorch loss is not finite")
            loss.backward()
            opt.step()
            correct += int(z.argmax(1).eq(y).sum().item())
            loss_sum += loss_value * x.shape[0]
            images += x.shape[0]
            step += 1
        seconds = time.perf_counter() - t0
        epochs.append({"images_per_second": images / seconds, "seconds": seconds,
                       "train_loss": loss_sum / images, "train_acc": correct / images})
    total_images = sum(e["images_per_second"] * e["seconds"] for e in epochs)
    return {"mean_images_per_second": total_images / sum(e["seconds"] for e in epochs),
            "epochs": epochs}


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example: /usr/bin/python3 bench/train_speed.py --images 10240 "
                                       "--epochs 3 --threads 2 --workers 2")
    p.add_argument("--store", default=os.path.join(ROOT, "runs/demo/data/fashion_mnist.h5"))
    p.add_argument("--images", type=int, default=10240, help="training images per epoch (subset of train)")
    p.add_argument("--epochs", type=int, default=3, help="epochs; the table shows each and the mean")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=2, help="loader threads (ours) / processes (PyTorch)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", default="resnet18", choices=list(mt.RESNET_ARCHS))
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--small-stem", type=int, default=1, choices=[0, 1])
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--pad", type=int, default=2)
    p.add_argument("--bin", default=os.path.join(ROOT, "build/bin"), help="where train_teacher is")
    p.add_argument("--only", choices=["ours", "pytorch"], default=None, help="run one side only")
    p.add_argument("--pytorch-channels-last", action="store_true",
                   help="also train PyTorch with channels-last model and inputs (its best CPU setting)")
    p.add_argument("--ours-channels-last", action="store_true",
                   help="also train ours with --memory-format channels-last")
    p.add_argument("--json-out", default="", help="also write the results as JSON here")
    return p


def main():
    args = make_parser().parse_args()
    if not os.path.exists(args.store):
        raise SystemExit("train_speed: %s does not exist (make data, then the demo's prepare_data "
                         "step, or give --store)" % args.store)
    if args.images < args.batch_size:
        raise SystemExit("train_speed: --images must be >= --batch-size")

    workdir = tempfile.mkdtemp(prefix="mlfd_train_speed_")
    try:
        store = os.path.join(workdir, "store.h5")
        data = make_bench_store(args.store, store, args.images, seed=0)
        results = {}
        # PyTorch first, so the page cache is equally warm for both (the store copy was just read).
        if args.only in (None, "pytorch"):
            results["pytorch"] = run_pytorch(args, data)
            if args.pytorch_channels_last:
                results["pytorch_channels_last"] = run_pytorch(args, data, channels_last=True)
        if args.only in (None, "ours"):
            results["ours"] = run_ours(args, store, workdir)
            if args.ours_channels_last:
                results["ours_channels_last"] = run_ours(args, store, workdir, channels_last=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    settings = {"store": args.store, "images_per_epoch": args.images - args.images % args.batch_size,
                "epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
                "workers": args.workers,
                "model": "%s width %g small_stem %d embed %d, %d channel(s), %d classes" %
                         (args.arch, args.width, args.small_stem, args.embed_dim, data["channels"],
                          data["classes"]),
                "optimizer": "SGD lr %g momentum 0.9 nesterov, wd %g (not on biases/norms), cosine, "
                             "label smoothing 0.1" % (args.lr, args.weight_decay),
                "augmentation": "pad %d + random crop" % args.pad,
                "torch (python)": torch.__version__, "cpu": cpu_name(), "cores": os.cpu_count()}
    print("| setting | value |\n|---|---|")
    for k, v in settings.items():
        print("| %s | %s |" % (k, v))
    print()
    print("| epoch | ours (train_teacher) img/s | PyTorch img/s | ours / PyTorch |\n|---|---|---|---|")
    ours = results.get("ours", {}).get("epochs", [])
    pt = results.get("pytorch", {}).get("epochs", [])

    def cell(lst, i):
        return "%.1f" % lst[i]["images_per_second"] if i < len(lst) else "-"

    for i in range(args.epochs):
        ratio = ("%.2f" % (ours[i]["images_per_second"] / pt[i]["images_per_second"])
                 if i < len(ours) and i < len(pt) else "-")
        print("| %d | %s | %s | %s |" % (i + 1, cell(ours, i), cell(pt, i), ratio))
    mo = results.get("ours", {}).get("mean_images_per_second")
    mp = results.get("pytorch", {}).get("mean_images_per_second")
    print("| mean | %s | %s | %s |" % ("%.1f" % mo if mo else "-", "%.1f" % mp if mp else "-",
                                       "%.2f" % (mo / mp) if mo and mp else "-"))
    mc = results.get("pytorch_channels_last", {}).get("mean_images_per_second")
    if mc:
        print("| mean, PyTorch channels-last | %s | %.1f | %s |" % ("%.1f" % mo if mo else "-", mc,
                                                                    "%.2f" % (mo / mc) if mo else "-"))
    oc = results.get("ours_channels_last", {}).get("mean_images_per_second")
    if oc:
        print("| mean, ours --memory-format channels-last | %.1f | %s | %s |" % (oc, "%.1f" % mp if mp else "-",
                                                                              "%.2f" % (oc / mp) if mp else "-"))
        if mc:
            print("| mean, both channels-last | %.1f | %.1f | %.2f |" % (oc, mc, oc / mc))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"settings": settings, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
