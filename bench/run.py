#!/usr/bin/python3
"""Every performance ratio of docs/performance.md measured side by side in one run, as one table.

  training step    train_teacher's images/s against PyTorch eager (its defaults, and channels-last,
                   its best CPU setting), same model, recipe, batch and images (bench/train_speed.py)
  under load       train_teacher's images/s with one other CPU-bound process on the machine against
                   its images/s alone: as it runs by default, with OMP_WAIT_POLICY=PASSIVE, and with
                   --threads 1 (and what OMP_WAIT_POLICY=PASSIVE costs alone)
  frozen forward   a trained teacher's forward pass prepared as the stages run it (BatchNorm folded,
                   channels-last) against evaluation mode alone (build/bin/forward_speed)
  scale            train_teacher's images/s on 4x the training images against 1x, its pixels/s
                   on 56 and 112 px images against 28 px, and extract_features' peak memory for 4N
                   images against N
  feature cache    FeatureCache::Read of shuffled batches (a later epoch) against a plain sequential
                   read of the same file (build/bin/feature_cache)
  distillation     distill_student (FitNet) with teacher signals from a feature cache against the
                   student trained alone (CE): how much of the ideal speed-up of a cache over running
                   the teacher online is reached

Usage: bench/run.sh [--store S] [--threads T] [--images K] [--epochs E]
The store defaults to the demo's Fashion-MNIST store (runs/demo/data/fashion_mnist.h5).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mlfd_deps  # noqa: E402

if __name__ == "__main__":
    mlfd_deps.require("run.py", ["numpy", "h5py", "torch"])

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import train_speed  # noqa: E402


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit("run.py: %s failed (exit %d): %s" % (os.path.basename(cmd[0]), r.returncode,
                                                            r.stderr.strip()[-2000:]))
    return r.stdout


def teacher(args, store, out, threads=None, env=None, split="bench_train", epochs=None):
    """train_teacher on `split` with train_speed.py's recipe; mean images/s of the epochs after the first."""
    recipe = train_speed.make_parser().parse_args(["--bin", args.bin, "--threads", str(args.threads),
                                                   "--workers", "2", "--epochs", str(args.epochs)])
    cmd = train_speed.train_teacher_command(recipe, store, out, train_split=split, threads=threads, epochs=epochs)
    full_env = dict(os.environ)
    full_env.update(env or {})
    run(cmd, full_env)
    with open(out[:-3] + ".metrics.jsonl") as f:
        epochs = [json.loads(line) for line in f if line.strip()]
    later = epochs[1:] or epochs
    return sum(e["images_per_second"] for e in later) / len(later)


def student(args, store, out, extra):
    """distill_student of a student half the teacher's width on bench_train; mean images/s of the epochs after the first."""
    cmd = [os.path.join(args.bin, "distill_student"), "-v", "0", "--threads", str(args.threads), "--device", "cpu",
           "--workers", "2", "--arch", "resnet18", "--width", "0.125", "--small-stem", "--embed-dim", "64",
           "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--batch-size", "128", "--pad", "2",
           "--epochs", str(args.epochs), "--seed", "0", "--train-split", "bench_train", "--val-split", "bench_val",
           "--out", out] + extra + [store]
    run(cmd)
    with open(out[:-3] + ".metrics.jsonl") as f:
        epochs = [json.loads(line) for line in f if line.strip()]
    later = epochs[1:] or epochs
    return sum(e["images_per_second"] for e in later) / len(later)


def table_rows(text):
    """Rows of a Markdown table as lists of cells (header and rule excluded)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=os.path.join(ROOT, "runs/demo/data/fashion_mnist.h5"))
    p.add_argument("--bin", default=os.path.join(ROOT, "build/bin"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=4096, help="training images per epoch")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    if not os.path.exists(args.store):
        raise SystemExit("run.py: %s does not exist (make data and the demo's prepare_data step, or give "
                         "--store)" % args.store)
    for b in ("prepare_data", "train_teacher", "distill_student", "forward_speed", "extract_features", "feature_cache"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            raise SystemExit("run.py: %s not found; build first (make build)" % os.path.join(args.bin, b))
    work = tempfile.mkdtemp(prefix="mlfd_bench_")
    rows = []
    try:
        # Training step against PyTorch (its own script: one process per side, same images).
        tj = os.path.join(work, "train.json")
        run([sys.executable, os.path.join(HERE, "train_speed.py"), "--store", args.store, "--bin", args.bin,
             "--threads", str(args.threads), "--workers", "2", "--images", str(args.images), "--epochs",
             str(args.epochs), "--pytorch-channels-last", "--ours-channels-last", "--json-out", tj])
        with open(tj) as f:
            res = json.load(f)["results"]
        ours = res["ours"]["mean_images_per_second"]
        pt = res["pytorch"]["mean_images_per_second"]
        ptc = res["pytorch_channels_last"]["mean_images_per_second"]
        rows.append(("training step: train_teacher / PyTorch eager, defaults", ours / pt, ">= 1.2",
                     "%.0f / %.0f img/s" % (ours, pt)))
        rows.append(("training step: train_teacher / PyTorch eager, channels-last", ours / ptc, ">= 1.0",
                     "%.0f / %.0f img/s" % (ours, ptc)))
        oc = res["ours_channels_last"]["mean_images_per_second"]
        rows.append(("training step: train_teacher --memory-format channels-last / PyTorch eager, defaults", oc / pt,
                     ">= 1.2", "%.0f / %.0f img/s" % (oc, pt)))
        rows.append(("training step: both channels-last (train_teacher --memory-format channels-last / PyTorch)",
                     oc / ptc, ">= 1.0", "%.0f / %.0f img/s" % (oc, ptc)))

        # A store with the benchmark's splits, and a teacher trained on it (quiet machine).
        store = os.path.join(work, "store.h5")
        train_speed.make_bench_store(args.store, store, args.images, seed=0)
        t = os.path.join(work, "t.h5")
        quiet = teacher(args, store, t)
        quiet_passive = teacher(args, store, os.path.join(work, "q2.h5"), env={"OMP_WAIT_POLICY": "PASSIVE"})
        rows.append(("alone, OMP_WAIT_POLICY=PASSIVE: img/s / as it runs", quiet_passive / quiet, "-",
                     "%.0f / %.0f img/s" % (quiet_passive, quiet)))

        # Under load: one CPU-bound process beside the stage.
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            loaded = teacher(args, store, os.path.join(work, "l1.h5"))
            passive = teacher(args, store, os.path.join(work, "l2.h5"), env={"OMP_WAIT_POLICY": "PASSIVE"})
            single = teacher(args, store, os.path.join(work, "l3.h5"), threads=1)
        finally:
            hog.kill()
            hog.wait()
        for name, v in (("as it runs", loaded), ("OMP_WAIT_POLICY=PASSIVE", passive), ("--threads 1", single)):
            rows.append(("under load (one CPU-bound process beside it), %s: img/s / alone" % name, v / quiet,
                         ">= 0.4", "%.0f / %.0f img/s" % (v, quiet)))

        # Scale: the same training on 4x the images (images/s should not change), and
        # extract_features' peak memory for N and 4N images (it streams: should not change either).
        with h5py.File(store, "r+") as h:
            train = h["splits/train"][()]
            if len(train) < 4 * args.images:
                raise SystemExit("run.py: the store's train split has %d images; the scale rows need 4 x --images"
                                 % len(train))
            rng = np.random.default_rng(1)
            h.create_dataset("splits/bench_4x",
                             data=np.sort(rng.choice(train, 4 * args.images, replace=False)).astype("int64"))
        four = teacher(args, store, os.path.join(work, "s4.h5"), split="bench_4x", epochs=2)
        one = teacher(args, store, os.path.join(work, "s1.h5"), epochs=2)
        rows.append(("scale: train_teacher img/s on 4N images / on N (N = %d)" % args.images, four / one, "1.0",
                     "%.0f / %.0f img/s (epoch 2 of 2)" % (four, one)))
        rss = {}
        for split in ("bench_train", "bench_4x"):
            out = run([os.path.join(args.bin, "extract_features"), "-v", "0", "--threads", str(args.threads),
                       "--levels", "layer1,layer3,pool", "--splits", split, "--out",
                       os.path.join(work, "x_%s.h5" % split), t, store])
            rss[split] = json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]
        rows.append(("scale: extract_features peak RSS for 4N images / for N (layer1,layer3,pool)",
                     rss["bench_4x"] / rss["bench_train"], "1.0",
                     "%.0f / %.0f MB" % (rss["bench_4x"] / 1e6, rss["bench_train"] / 1e6)))

        # Scale with image size: the same recipe on 28, 56 and 112 px copies of the images (the
        # manifest's stored size; --max-train-per-class keeps the stores small). Linear in pixels
        # means the same pixels/s at every size.
        manifest = os.path.join(ROOT, "data_manifests", "fashion_mnist.json")
        with open(manifest) as mf:
            man = json.load(mf)
        size_images = max(256, args.images // 4)
        per_pixel = {}
        for size in (28, 56, 112):
            man["image"]["size"] = size
            mpath = os.path.join(work, "fm%d.json" % size)
            with open(mpath, "w") as mf:
                json.dump(man, mf)
            raw = os.path.join(work, "fm%d_raw.h5" % size)
            run([os.path.join(args.bin, "prepare_data"), "-v", "0", "--max-train-per-class",
                 str(size_images // 10 + 100), mpath, raw])
            sized = os.path.join(work, "fm%d.h5" % size)
            train_speed.make_bench_store(raw, sized, size_images, seed=0)
            os.remove(raw)
            per_pixel[size] = teacher(args, sized, os.path.join(work, "px%d.h5" % size), epochs=2) * size * size
            os.remove(sized)
        for size in (56, 112):
            rows.append(("scale: train_teacher pixels/s at %d px / at 28 px (%d images)" % (size, size_images),
                         per_pixel[size] / per_pixel[28], "1.0",
                         "%.0f / %.0f img/s" % (per_pixel[size] / size / size, per_pixel[28] / 28 / 28)))

        # Frozen forward pass.
        fw = table_rows(run([os.path.join(args.bin, "forward_speed"), "--threads", str(args.threads),
                             "--batch-size", "256", "--batches", "10", t]))
        base = float(fw[1][1])
        prepared = float(fw[-1][1])
        rows.append(("frozen forward: BatchNorm folded + channels-last / evaluation mode", prepared / base, ">= 2",
                     "%.0f / %.0f img/s, max abs diff of the logits %s" % (prepared, base, fw[-1][3])))

        # Feature cache reads.
        f = os.path.join(work, "f.h5")
        run([os.path.join(args.bin, "extract_features"), "-v", "0", "--threads", str(args.threads),
             "--levels", "layer1,layer3,pool", "--splits", "val", "--out", f, t, store])
        for level in ("layer1", "layer3", "pool"):
            fc = table_rows(run([os.path.join(args.bin, "feature_cache"), "--threads", str(args.threads),
                                 "--split", "val", "--level", level, f]))
            later = next(r for r in fc if r[0].startswith("FeatureCache::Read") and "later epochs" in r[0])
            seq = next(r for r in fc if r[0].startswith("plain sequential"))
            shape = re.search(r"x (\[[^\]]*\]) (float\d+)", fc[0][0])
            rows.append(("feature cache: shuffled FeatureCache::Read (later epoch) / sequential read, %s %s"
                         % (level, shape.group(1) if shape else ""), float(later[3]) / float(seq[3]), ">= 0.8",
                         "%s / %s GB/s" % (later[3], seq[3])))

        # Distillation from a cache against online: the ideal speed-up of a cache is online step
        # time / student-only step time, so cached / ideal = student-only time / cached time, i.e.
        # the cached run's images/s over the student-only run's (CE, no teacher).
        ft = os.path.join(work, "f_train.h5")
        run([os.path.join(args.bin, "extract_features"), "-v", "0", "--threads", str(args.threads),
             "--levels", "layer2", "--splits", "bench_train", "--out", ft, t, store])
        speeds = {}
        for name, extra in (("online", ["--method", "fitnet", "--teacher", t]),
                            ("cached", ["--method", "fitnet", "--teacher", t, "--teacher-signals", "cached",
                                        "--features", ft]),
                            ("student only", ["--method", "ce"])):
            out = os.path.join(work, "d_%s.h5" % name.replace(" ", "_"))
            speeds[name] = student(args, store, out, extra)
        rows.append(("distillation (FitNet): cached images/s / student-only images/s (= cached speed-up / ideal)",
                     speeds["cached"] / speeds["student only"], ">= 0.8",
                     "online %.0f, cached %.0f, student only %.0f img/s; cached / online %.2f, ideal %.2f"
                     % (speeds["online"], speeds["cached"], speeds["student only"],
                        speeds["cached"] / speeds["online"], speeds["student only"] / speeds["online"])))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    version = run([os.path.join(args.bin, "train_teacher"), "--version"]).strip().splitlines()
    print("| setting | value |\n|---|---|")
    print("| cpu | %s, %d cores |" % (train_speed.cpu_name(), os.cpu_count()))
    print("| threads | %d |" % args.threads)
    print("| ours | %s |" % "; ".join([version[0]] + [v.strip() for v in version if re.match(r"\s*(libtorch|hdf5) ", v)]))
    print("| PyTorch (python) | %s |" % torch.__version__)
    print("| HDF5 (h5py) | %s |" % h5py.version.hdf5_version)
    print("| store | %s, %d training images per epoch, %d epochs |" % (args.store, args.images, args.epochs))
    print()
    print("| measure | ratio | goal | measured |\n|---|---|---|---|")
    for name, ratio, goal, detail in rows:
        print("| %s | %.2f | %s | %s |" % (name, ratio, goal, detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
