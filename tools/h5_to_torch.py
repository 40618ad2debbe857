#!/usr/bin/python3
"""h5_to_torch: exports one of this project's checkpoints (teacher, student, joint baseline, or an
imported network) to a PyTorch state dict, so it can be used, fine-tuned or inspected in PyTorch.

Writes <out>.pt (torch.save of the state dict, our dotted names = torchvision's) and a JSON
sidecar (--config-out, default <out without .pt>.json) with the model config, the per-dataset
heads (class names, input normalisation, size), kind, epoch, metrics and the source's sha256.
Before writing, the state dict is loaded strictly into tools/mlfd_torch.py's MLFDResNet (or, for
the video ResNets r3d_18, mc3_18, r2plus1d_18, MLFDVideoResNet) built from the checkpoint's config;
with --torchvision it must also load strictly into torchvision.models.<arch> (or
torchvision.models.video.<arch>), and both networks must give the same outputs (an error explains
why a config is not torchvision-compatible: small stem, width, embed layer, several heads, 1
channel).

Usage: h5_to_torch.py [--torchvision] [--config-out <x.json>] <checkpoint.h5> <out.pt>

Example:
  /usr/bin/python3 tools/h5_to_torch.py runs/demo/teachers/mnist.h5 mnist_teacher.pt
  # in PyTorch:
  #   import mlfd_torch, torch, json
  #   cfg = json.load(open("mnist_teacher.json"))
  #   net = mlfd_torch.build_model(cfg["model"])    # MLFDResNet or MLFDVideoResNet
  #   net.load_state_dict(torch.load("mnist_teacher.pt"))

Exit status: 0 on success, 2 on a usage error, 1 on a runtime failure (one line on stderr).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mlfd_deps  # noqa: E402 - standard library only

if __name__ == "__main__":  # one line instead of a traceback under a python3 without them
    mlfd_deps.require("h5_to_torch.py", ["numpy", "h5py", "torch"])

import mlfd_torch as mt  # noqa: E402


class ToolError(Exception):
    pass


def main(argv=None):
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        prog="h5_to_torch.py", description=doc[0] + "\n\n" + doc[1] + "\n\n" + doc[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  /usr/bin/python3 tools/h5_to_torch.py --torchvision "
               "runs/x/teachers/cub200.h5 cub200_resnet50.pt")
    p.add_argument("checkpoint", help="checkpoint (.h5) written by this project")
    p.add_argument("out", help="output PyTorch state dict (.pt), written atomically")
    p.add_argument("--config-out", default="", help="JSON sidecar (default: <out stem>.json)")
    p.add_argument("--torchvision", action="store_true",
                   help="also require (and verify) that it loads into torchvision.models.<arch>")
    p.add_argument("--skip-verify", action="store_true",
                   help="export the raw state dict without rebuilding the network (needed for "
                        "architectures mlfd_torch does not mirror: efficientnet_b0, seresnext)")
    args = p.parse_args(argv)
    if args.torchvision:
        mlfd_deps.require("h5_to_torch.py", ["torchvision"])
    try:
        import torch
        if not args.out.endswith((".pt", ".pth")):
            raise ToolError("%s: the output should end in .pt or .pth" % args.out)
        sidecar = args.config_out or os.path.splitext(args.out)[0] + ".json"
        if os.path.abspath(sidecar) == os.path.abspath(args.out):
            raise ToolError("--config-out must differ from the output")
        meta = mt.read_checkpoint_meta(args.checkpoint)
        config = meta["model"]
        arch = config.get("arch")
        state = mt.read_checkpoint_state(args.checkpoint)
        tv_why = mt.torchvision_incompatibility(config)
        if args.torchvision and tv_why:
            raise ToolError("%s: the model is not a torchvision %s: %s. Export without "
                            "--torchvision and use tools/mlfd_torch.py's build_model()" %
                            (args.checkpoint, arch, "; ".join(tv_why)))
        max_diff = None
        if not args.skip_verify:
            if arch not in mt.MIRRORED_ARCHS:
                raise ToolError("%s: architecture '%s' is not mirrored by tools/mlfd_torch.py "
                                "(only %s); use --skip-verify to export its state dict as is" %
                                (args.checkpoint, arch, ", ".join(mt.MIRRORED_ARCHS)))
            model = mt.build_model(config)
            mt.load_strict(model, state, args.checkpoint)
            ordered = model.state_dict()
            state = {k: ordered[k].clone() for k in ordered}  # module order, like torchvision's
            if args.torchvision:
                tv = mt.make_torchvision(arch, config["head_classes"][0])
                mt.load_strict(tv, state, args.checkpoint)
                model.eval()
                tv.eval()
                head = meta["datasets"][0] if meta["datasets"] else {"height": 64, "width": 64}
                g = torch.Generator().manual_seed(0)
                if arch in mt.VIDEO_ARCHS:  # 2 clips of 4 frames at 32 x 32 keep the check quick
                    x = torch.randn(2, 3, 4, 32, 32, generator=g)
                else:
                    x = torch.randn(2, 3, max(32, head["height"]), max(32, head["width"]), generator=g)
                with torch.no_grad():
                    max_diff = float((model(x) - tv(x)).abs().max())
                if max_diff > 1e-5:
                    raise ToolError("%s: loads into torchvision's %s but the outputs differ by %g"
                                    % (args.checkpoint, arch, max_diff))
        side = {"source": {"path": args.checkpoint, "sha256": mt.sha256_file(args.checkpoint)},
                "kind": meta["kind"], "epoch": meta["epoch"], "model": config,
                "datasets": meta["datasets"], "metrics": meta["metrics"],
                "torchvision_compatible": not tv_why,
                "torchvision_incompatibility": tv_why,
                "state_dict": args.out, "tensors": len(state),
                "parameters": int(sum(t.numel() for k, t in state.items()
                                      if not k.endswith(("running_mean", "running_var",
                                                         "num_batches_tracked"))))}
        with mt.AtomicOutput(args.out) as tmp:
            torch.save(state, tmp)
        with mt.AtomicOutput(sidecar) as tmp:
            with open(tmp, "w") as f:
                json.dump(side, f, indent=2)
                f.write("\n")
        print(json.dumps({"state_dict": args.out, "config": sidecar, "arch": arch,
                          "tensors": len(state), "torchvision_compatible": not tv_why,
                          "torchvision_max_abs_diff": max_diff}))
        return 0
    except (ToolError, mt.CheckpointError) as e:
        print("h5_to_torch: error: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print("h5_to_torch: error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
