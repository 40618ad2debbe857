#!/usr/bin/python3
"""torch_to_h5: imports a torchvision ResNet (18/34/50) or video ResNet (r3d_18, mc3_18,
r2plus1d_18) into this project's checkpoint format, so a PyTorch-trained network can serve as an
MLFD teacher without stage 1 (train_teacher).

The dataset the network predicts -- its name, class names, channels and image size -- comes from
the image store the teacher will be used with (--store); the input normalisation is the store's
mean/std unless --mean/--std (or --imagenet-norm) give the one the network was trained with. A
video ResNet is imported without a store: --num-classes and --dataset name its head, --class-names
its classes (default "0".."K-1"), --size its frame size (default 112) and the normalisation is
Kinetics-400's (torchvision's video presets) unless --mean/--std give another. The
network's fc layer must have one output per class of the store, in the store's class order. The
checkpoint gets kind "imported" and a provenance record naming the inputs and their sha256. After
writing, the file is read back into tools/mlfd_torch.py's model and its outputs are compared with
the torchvision network's (--no-verify skips this).

Usage: torch_to_h5.py --store <store.h5> (--weights <state_dict.pt> | --random-seed N)
                      [--arch resnet18|resnet34|resnet50] --out <checkpoint.h5>
       torch_to_h5.py --arch r3d_18|mc3_18|r2plus1d_18 --num-classes K --dataset <name>
                      (--weights <state_dict.pt> | --random-seed N) --out <checkpoint.h5>

Example:
  /usr/bin/python3 tools/torch_to_h5.py --arch resnet50 --weights cub_resnet50.pt \\
      --store runs/paper/data/cub200.h5 --imagenet-norm --out runs/paper/teachers/cub200.h5

Exit status: 0 on success, 2 on a usage error, 1 on a runtime failure (one line on stderr).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mlfd_deps  # noqa: E402 - standard library only

if __name__ == "__main__":  # one line instead of a traceback under a python3 without them
    mlfd_deps.require("torch_to_h5.py", ["numpy", "h5py", "torch", "torchvision"])

import mlfd_torch as mt  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# torchvision's VideoClassification preset (the Kinetics-400 weights of r3d_18, mc3_18, r2plus1d_18).
KINETICS_MEAN = [0.43216, 0.394666, 0.37645]
KINETICS_STD = [0.22803, 0.22145, 0.216989]


class ToolError(Exception):
    pass


class UsageError(Exception):
    pass


def video_head_meta(args):
    """What a store gives an image ResNet's head, from the options for a video ResNet: name,
    class names, channels 3, frame size (default 112), Kinetics-400's mean/std."""
    if args.store:
        raise UsageError("--store: %s is a video network; it is imported without an image store "
                         "(give --num-classes and --dataset)" % args.arch)
    if args.imagenet_norm:
        raise UsageError("--imagenet-norm: %s takes Kinetics-400's normalisation by default; give "
                         "--mean/--std for another" % args.arch)
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else []
    if names and (not all(names) or len(set(names)) != len(names)):
        raise UsageError("--class-names: empty or repeated names in '%s'" % args.class_names)
    k = args.num_classes or len(names)
    if k < 1 or not args.dataset:
        raise UsageError("%s needs --num-classes (or --class-names) and --dataset" % args.arch)
    if names and len(names) != k:
        raise UsageError("--class-names has %d names, --num-classes is %d" % (len(names), k))
    size = args.size or 112
    return {"name": args.dataset, "class_names": names or [str(i) for i in range(k)],
            "channels": 3, "height": size, "width": size,
            "mean": KINETICS_MEAN, "std": KINETICS_STD}


def parse_floats(text, what):
    try:
        v = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ToolError("--%s: expected numbers separated by commas, got '%s'" % (what, text))
    if not v:
        raise ToolError("--%s: empty" % what)
    return v


def extract_state_dict(obj, path):
    """A state dict from what torch.load returned: a state dict, a whole nn.Module, or a training
    checkpoint dict holding one under 'state_dict' / 'model' / 'model_state_dict'."""
    import torch
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return extract_state_dict(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            # DataParallel / DistributedDataParallel wrap every name in "module."
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return dict(obj)
    raise ToolError("%s: not a PyTorch state dict (nor a module or a dict holding one under "
                    "'state_dict' or 'model')" % path)


def load_weights(path):
    import torch
    if not os.path.isfile(path):
        raise ToolError("%s: no such file" % path)
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds
        try:  # a TorchScript archive
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001
            raise ToolError("%s: cannot be read by torch.load (%s)" % (path, str(e).splitlines()[0]))
    return extract_state_dict(obj, path)


def random_torchvision(arch, num_classes, seed):
    """A seeded random torchvision (video) ResNet. BatchNorm affine parameters and running
    statistics are randomised too (torchvision initialises them to 1/0), so a round trip exercises
    every tensor."""
    import torch
    torch.manual_seed(seed)
    net = mt.make_torchvision(arch, num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ()).item()))
    return net.state_dict()


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="torch_to_h5.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  /usr/bin/python3 tools/torch_to_h5.py --arch resnet50 --weights "
               "cub_resnet50.pt --store runs/paper/data/cub200.h5 --imagenet-norm "
               "--out runs/paper/teachers/cub200.h5")
    p.add_argument("--arch", default="resnet18", choices=list(mt.MIRRORED_ARCHS),
                   help="torchvision architecture (default resnet18; r3d_18, mc3_18, r2plus1d_18 "
                        "are torchvision.models.video's)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="PyTorch state dict (.pt/.pth; a pickled module or a "
                                       "training checkpoint holding 'state_dict' also works)")
    src.add_argument("--random-seed", type=int,
                     help="instead of --weights: a seeded random torchvision network (for tests)")
    p.add_argument("--num-classes", type=int, default=0,
                   help="classes of the network's fc (default: the store's class count; must "
                        "equal it)")
    p.add_argument("--store", default="", help="image store (prepare_data) the teacher is for: "
                   "gives dataset name, class names, channels, image size, mean/std (required "
                   "for the image ResNets; video ResNets take --num-classes and --dataset)")
    p.add_argument("--class-names", default="",
                   help="video ResNets: the head's class names, comma-separated (default 0..K-1)")
    p.add_argument("--dataset", default="", help="dataset name of the head (default: the store's)")
    p.add_argument("--mean", default="", help="per-channel mean in [0,1] units, e.g. "
                   "0.485,0.456,0.406 (default: the store's)")
    p.add_argument("--std", default="", help="per-channel std in [0,1] units (default: the store's)")
    p.add_argument("--imagenet-norm", action="store_true",
                   help="use ImageNet's mean/std (torchvision's pretrained weights expect it)")
    p.add_argument("--size", type=int, default=0,
                   help="input size the network expects; evaluate and later stages resize the "
                        "stored images to it (default: the stored size, no resize; video "
                        "ResNets: the frame size, default 112)")
    p.add_argument("--kind", default="imported", help="checkpoint kind (default imported)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-reading the written file and comparing outputs with torchvision")
    p.add_argument("--out", required=True, help="output checkpoint (.h5), written atomically")
    args = p.parse_args(argv)

    try:
        import torch
        if args.imagenet_norm and (args.mean or args.std):
            raise ToolError("--imagenet-norm and --mean/--std are mutually exclusive")
        if args.size < 0:
            raise ToolError("--size must be >= 0")
        video = args.arch in mt.VIDEO_ARCHS
        if video:
            store = video_head_meta(args)
        elif not args.store:
            raise UsageError("--store is required for %s (the image store the teacher is for)" %
                             args.arch)
        else:
            store = mt.read_store_meta(args.store)
        k = len(store["class_names"])
        if args.num_classes and args.num_classes != k:
            raise ToolError("--num-classes %d, but %s has %d classes (%s); the fc layer must have "
                            "one output per class of the store" %
                            (args.num_classes, args.store, k, mt.short_list(store["class_names"])))
        if not video and store["channels"] != 3:
            raise ToolError("%s has %d-channel images, but torchvision's ResNets take 3 channels; "
                            "prepare a 3-channel store (manifest \"image\": {\"channels\": 3})" %
                            (args.store, store["channels"]))
        mean, std = store["mean"], store["std"]
        if args.imagenet_norm:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        if args.mean:
            mean = parse_floats(args.mean, "mean")
        if args.std:
            std = parse_floats(args.std, "std")
        for name, v in (("mean", mean), ("std", std)):
            if len(v) != store["channels"]:
                raise ToolError("--%s has %d value(s), the images have %d channel(s)" %
                                (name, len(v), store["channels"]))
        if min(std) <= 0:
            raise ToolError("--std values must be > 0")

        if args.weights:
            state = load_weights(args.weights)
        else:
            state = random_torchvision(args.arch, k, args.random_seed)
        fc = state.get("fc.weight")
        if fc is None:
            raise ToolError("%s: has no fc.weight; is it a torchvision ResNet (%s)?" %
                            (args.weights, args.arch))
        if fc.shape[0] != k:
            raise ToolError("%s: the network has %d output classes, but %s has %d (%s); import "
                            "a network trained on this dataset's classes (in the store's class "
                            "order)" % (args.weights, fc.shape[0], args.store, k,
                                        mt.short_list(store["class_names"])))
        dataset = args.dataset or store["name"]
        config = {"arch": args.arch, "in_channels": 3, "head_classes": [k], "head_names": [dataset],
                  "small_stem": False, "width": 1.0, "embed_dim": 0, "dropout": 0.0,
                  "drop_path": 0.0}
        # Strict check against our model (= torchvision's names and shapes for this config).
        model = mt.build_model(config)
        try:
            mt.load_strict(model, state, args.weights or "random network")
        except mt.CheckpointError as e:
            raise ToolError("%s is not a torchvision %s: %s" % (args.weights, args.arch, e))
        size_h = args.size or store["height"]
        size_w = args.size or store["width"]
        head = {"dataset": dataset, "class_names": store["class_names"], "mean": mean, "std": std,
                "height": size_h, "width": size_w, "channels": store["channels"],
                "store_sha256": mt.sha256_file(args.store) if args.store else "",
                "label_offset": 0, "head": 0}
        options = {k2: v for k2, v in vars(args).items()}
        inputs = {"store": args.store} if args.store else {}
        if args.weights:
            inputs["weights"] = args.weights
        prov = mt.provenance("torch_to_h5", options, inputs)
        ordered = model.state_dict()  # our names, in module order
        mt.write_checkpoint(args.out, {n: ordered[n] for n in ordered}, config, [head], args.kind,
                            prov, epoch=0, metrics={"imported_from": args.weights or
                                                    "random torchvision %s, seed %d" %
                                                    (args.arch, args.random_seed)})

        max_diff = None
        if not args.no_verify:
            reread, _ = mt.load_checkpoint(args.out)
            tv = mt.make_torchvision(args.arch, k)
            mt.load_strict(tv, state, "torchvision state")
            tv.eval()
            g = torch.Generator().manual_seed(0)
            if video:  # 2 clips of 4 frames at 32 x 32 keep the check quick
                x = torch.randn(2, 3, 4, 32, 32, generator=g)
            else:
                x = torch.randn(2, 3, max(size_h, 32), max(size_w, 32), generator=g)
            with torch.no_grad():
                max_diff = float((reread(x) - tv(x)).abs().max())
            if max_diff > 1e-5:
                raise ToolError("%s: written, but its outputs differ from torchvision's by %g" %
                                (args.out, max_diff))
        import json
        print(json.dumps({"checkpoint": args.out, "arch": args.arch, "dataset": dataset,
                          "classes": k, "mean": mean, "std": std, "size": [size_h, size_w],
                          "verified_max_abs_diff": max_diff}))
        return 0
    except UsageError as e:
        p.print_usage(sys.stderr)
        print("torch_to_h5.py: error: %s" % e, file=sys.stderr)
        return 2
    except (ToolError, mt.CheckpointError) as e:
        print("torch_to_h5: error: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print("torch_to_h5: error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
