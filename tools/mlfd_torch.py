#!/usr/bin/python3
"""PyTorch mirror of this project's ResNet-18/34/50 family and video ResNets (r3d_18, mc3_18,
r2plus1d_18), and h5py readers for its checkpoints.

The C++ models (lib/models/resnet.cc, lib/models/model.cc) use torchvision's module structure
and parameter names, plus the options of this project: a small-image stem (3x3 stride-1 conv1,
no max-pool), a channel width multiplier, 1 or 3 input channels, the MLFD head (global average
pool -> optional Linear "embed" -> dropout -> Linear "fc", or one Linear per dataset under
"heads.<i>") and stochastic depth. `MLFDResNet` builds the same network in PyTorch, with the same
state-dict keys, so any ResNet checkpoint of ours loads strictly into it; for the standard
configuration (width 1, no small stem, no embed layer, one head) the state dict also loads
strictly into torchvision.models.resnet18/34/50. `MLFDVideoResNet` does the same for
lib/models/video_resnet.cc (torchvision.models.video.r3d_18/mc3_18/r2plus1d_18; input
N x C x T x H x W clips); `build_model(config)` picks the class for a config.

    import mlfd_torch
    model, meta = mlfd_torch.load_checkpoint("runs/demo/teachers/mnist.h5")
    logits = model.eval()(x)   # x: N x C x H x W, (pixels/255 - mean) / std, see meta["datasets"]

Only the standard library, NumPy, h5py and torch are needed (torchvision only for the
torchvision-compatibility helpers). See docs/interop.md.

Run as a script, it checks that a checkpoint rebuilds in PyTorch and prints a JSON summary:
  /usr/bin/python3 tools/mlfd_torch.py runs/demo/teachers/mnist.h5
"""

import json
import math

if __name__ == "__main__":  # one line instead of a traceback under a python3 without them
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mlfd_deps
    mlfd_deps.require("mlfd_torch.py", ["numpy", "h5py", "torch"])

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CHECKPOINT_FORMAT = "mlfd.checkpoint"
CHECKPOINT_VERSION = 1
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50")
VIDEO_ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18")
MIRRORED_ARCHS = RESNET_ARCHS + VIDEO_ARCHS
# (blocks per stage, bottleneck?)
_DEPTHS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
           "resnet50": ((3, 4, 6, 3), True)}
CONFIG_KEYS = ("arch", "in_channels", "head_classes", "head_names", "small_stem", "width",
               "embed_dim", "dropout", "drop_path")


class CheckpointError(Exception):
    """A checkpoint that cannot be read or rebuilt; the message names the file and the problem."""


def scaled(channels, width):
    """Channel count after the width multiplier: max(4, lround(channels * width)), as resnet.cc."""
    x = channels * width
    n = int(math.floor(x))
    if x - n >= 0.5:  # std::lround: halves away from zero (Python's round() would go to even)
        n += 1
    return max(4, n)


def drop_path(x, p, training):
    """Stochastic depth: drops whole residual branches per sample (as DropPath in resnet.cc)."""
    if not training or p <= 0:
        return x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


def _conv(cin, cout, k, stride=1, pad=0):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)


class Block(nn.Module):
    """torchvision's BasicBlock (expansion 1) or Bottleneck (expansion 4, stride on the 3x3)."""

    def __init__(self, inplanes, planes, stride, bottleneck, drop_path_rate):
        super().__init__()
        self.bottleneck = bottleneck
        self.drop_path = drop_path_rate
        out = planes * 4 if bottleneck else planes
        if bottleneck:
            self.conv1 = _conv(inplanes, planes, 1)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = _conv(planes, planes, 3, stride, 1)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = _conv(planes, out, 1)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1 = _conv(inplanes, planes, 3, stride, 1)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = _conv(planes, planes, 3, 1, 1)
            self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(_conv(inplanes, out, 1, stride), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(drop_path(y, self.drop_path, self.training) + identity)


class MLFDResNet(nn.Module):
    """ResNet-18/34/50 with the MLFD head; state-dict keys equal those of our checkpoints.

    Arguments are the keys of ModelConfig (lib/models/model.h). Levels, as in C++: "stem",
    "layer1".."layer4", "pool", "embed" (only with an embed layer), "logits".
    """

    def __init__(self, arch="resnet18", in_channels=3, head_classes=(1000,), head_names=(),
                 small_stem=False, width=1.0, embed_dim=0, dropout=0.0, drop_path=0.0):
        super().__init__()
        if arch not in _DEPTHS:
            raise ValueError("mlfd_torch builds %s; '%s' is not one of them" %
                             (", ".join(RESNET_ARCHS), arch))
        if in_channels not in (1, 3):
            raise ValueError("in_channels must be 1 or 3, not %r" % (in_channels,))
        head_classes = [int(k) for k in head_classes]
        if not head_classes or min(head_classes) < 1:
            raise ValueError("head_classes must list >= 1 class per head, got %r" % (head_classes,))
        if not 0 < width <= 4:
            raise ValueError("width must be in (0, 4], not %r" % (width,))
        self.arch = arch
        self.config = {"arch": arch, "in_channels": int(in_channels), "head_classes": head_classes,
                       "head_names": list(head_names), "small_stem": bool(small_stem),
                       "width": float(width), "embed_dim": int(embed_dim),
                       "dropout": float(dropout), "drop_path": float(drop_path)}
        self.small_stem = bool(small_stem)
        depth, bottleneck = _DEPTHS[arch]
        expansion = 4 if bottleneck else 1
        inplanes = scaled(64, width)
        self.conv1 = (_conv(in_channels, inplanes, 3, 1, 1) if small_stem
                      else _conv(in_channels, inplanes, 7, 2, 3))
        self.bn1 = nn.BatchNorm2d(inplanes)
        total = sum(depth)
        index = 0
        for s in range(4):
            planes = scaled(64 << s, width)
            blocks = []
            for b in range(depth[s]):
                dp = drop_path * index / (total - 1) if total > 1 else 0.0
                blocks.append(Block(inplanes, planes, 2 if (b == 0 and s > 0) else 1, bottleneck, dp))
                inplanes = planes * expansion
                index += 1
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.feature_dim = inplanes
        self.has_embed = embed_dim > 0 and embed_dim != inplanes
        e = embed_dim if self.has_embed else inplanes
        if self.has_embed:
            self.embed = nn.Linear(inplanes, e)
        self.dropout = nn.Dropout(dropout)
        if len(head_classes) == 1:
            self.fc = nn.Linear(e, head_classes[0])
        else:
            self.heads = nn.ModuleList([nn.Linear(e, k) for k in head_classes])
        # torchvision's initialisation (the C++ side's InitConvBn); Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config):
        """Builds the model from a ModelConfig JSON object (dict); unknown keys are errors."""
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError("unknown model config key(s): %s" % ", ".join(unknown))
        for key in ("arch", "in_channels", "head_classes"):
            if key not in config:
                raise ValueError("model config lacks '%s'" % key)
        return cls(**{k: config[k] for k in CONFIG_KEYS if k in config})

    @property
    def num_heads(self):
        return len(self.config["head_classes"])

    def head_module(self, head):
        if not 0 <= head < self.num_heads:
            raise IndexError("model has %d head(s); no head %d" % (self.num_heads, head))
        return self.fc if self.num_heads == 1 else self.heads[head]

    def level_names(self):
        return (["stem", "layer1", "layer2", "layer3", "layer4", "pool"] +
                (["embed"] if self.has_embed else []) + ["logits"])

    def forward_levels(self, x, head=0):
        """Every level of the network as a dict (maps, pooled vector, embedding, logits)."""
        out = {}
        y = F.relu(self.bn1(self.conv1(x)))
        if not self.small_stem:
            y = F.max_pool2d(y, 3, 2, 1)
        out["stem"] = y
        for i in range(1, 5):
            y = getattr(self, "layer%d" % i)(y)
            out["layer%d" % i] = y
        f = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        out["pool"] = f
        if self.has_embed:
            f = self.embed(f)
            out["embed"] = f
        out["logits"] = self.head_module(head)(self.dropout(f))
        return out

    def features(self, x):
        """Backbone + pool + embed: the vector every head reads."""
        y = F.relu(self.bn1(self.conv1(x)))
        if not self.small_stem:
            y = F.max_pool2d(y, 3, 2, 1)
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        f = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        return self.embed(f) if self.has_embed else f

    def forward(self, x, head=0):
        return self.head_module(head)(self.dropout(self.features(x)))


# ------------------------------------------------------------------------------------------------
# Video ResNets (lib/models/video_resnet.cc)


def _conv3(cin, cout, k, stride, pad):
    return nn.Conv3d(cin, cout, k, stride=stride, padding=pad, bias=False)


def _video_conv(kind, cin, cout, mid, s):
    """torchvision's Conv3DSimple, Conv3DNoTemporal or Conv2Plus1D (same structure and names)."""
    if kind == "3d":
        return _conv3(cin, cout, (3, 3, 3), (s, s, s), (1, 1, 1))
    if kind == "no_temporal":
        return _conv3(cin, cout, (1, 3, 3), (1, s, s), (0, 1, 1))
    return nn.Sequential(_conv3(cin, mid, (1, 3, 3), (1, s, s), (0, 1, 1)), nn.BatchNorm3d(mid),
                         nn.ReLU(inplace=True), _conv3(mid, cout, (3, 1, 1), (s, 1, 1), (1, 0, 0)))


class VideoBlock(nn.Module):
    """torchvision.models.video.resnet.BasicBlock (midplanes of (inplanes, planes)), drop-path."""

    def __init__(self, kind, inplanes, planes, stride, drop_path_rate):
        super().__init__()
        mid = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        self.drop_path = drop_path_rate
        self.conv1 = nn.Sequential(_video_conv(kind, inplanes, planes, mid, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_video_conv(kind, planes, planes, mid, 1), nn.BatchNorm3d(planes))
        self.downsample = None
        if stride != 1 or inplanes != planes:
            ds = (1, stride, stride) if kind == "no_temporal" else (stride, stride, stride)
            self.downsample = nn.Sequential(_conv3(inplanes, planes, 1, ds, 0), nn.BatchNorm3d(planes))

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(drop_path(y, self.drop_path, self.training) + identity)


_VIDEO_KINDS = {"r3d_18": ("3d",) * 4, "mc3_18": ("3d",) + ("no_temporal",) * 3,
                "r2plus1d_18": ("2plus1d",) * 4}


class MLFDVideoResNet(MLFDResNet):
    """r3d_18 / mc3_18 / r2plus1d_18 with the MLFD head; state-dict keys equal those of our
    checkpoints (and, in the standard configuration, torchvision.models.video's). Input
    N x C x T x H x W. small_stem: a 3x3 spatial stem kernel without spatial stride."""

    def __init__(self, arch="r3d_18", in_channels=3, head_classes=(400,), head_names=(),
                 small_stem=False, width=1.0, embed_dim=0, dropout=0.0, drop_path=0.0):
        nn.Module.__init__(self)
        if arch not in _VIDEO_KINDS:
            raise ValueError("MLFDVideoResNet builds %s; '%s' is not one of them" %
                             (", ".join(VIDEO_ARCHS), arch))
        if in_channels not in (1, 3):
            raise ValueError("in_channels must be 1 or 3, not %r" % (in_channels,))
        head_classes = [int(k) for k in head_classes]
        if not head_classes or min(head_classes) < 1:
            raise ValueError("head_classes must list >= 1 class per head, got %r" % (head_classes,))
        if not 0 < width <= 4:
            raise ValueError("width must be in (0, 4], not %r" % (width,))
        self.arch = arch
        self.config = {"arch": arch, "in_channels": int(in_channels), "head_classes": head_classes,
                       "head_names": list(head_names), "small_stem": bool(small_stem),
                       "width": float(width), "embed_dim": int(embed_dim),
                       "dropout": float(dropout), "drop_path": float(drop_path)}
        self.small_stem = bool(small_stem)
        k, s, p = (3, 1, 1) if small_stem else (7, 2, 3)
        inplanes = scaled(64, width)
        if arch == "r2plus1d_18":  # R2Plus1dStem
            mid = scaled(45, width)
            self.stem = nn.Sequential(_conv3(in_channels, mid, (1, k, k), (1, s, s), (0, p, p)),
                                      nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                                      _conv3(mid, inplanes, (3, 1, 1), 1, (1, 0, 0)),
                                      nn.BatchNorm3d(inplanes), nn.ReLU(inplace=True))
        else:  # BasicStem
            self.stem = nn.Sequential(_conv3(in_channels, inplanes, (3, k, k), (1, s, s), (1, p, p)),
                                      nn.BatchNorm3d(inplanes), nn.ReLU(inplace=True))
        index = 0
        for st, kind in enumerate(_VIDEO_KINDS[arch]):
            planes = scaled(64 << st, width)
            blocks = []
            for b in range(2):
                blocks.append(VideoBlock(kind, inplanes, planes, 2 if (b == 0 and st > 0) else 1,
                                         drop_path * index / 7))
                inplanes = planes
                index += 1
            setattr(self, "layer%d" % (st + 1), nn.Sequential(*blocks))
        self.feature_dim = inplanes
        self.has_embed = embed_dim > 0 and embed_dim != inplanes
        e = embed_dim if self.has_embed else inplanes
        if self.has_embed:
            self.embed = nn.Linear(inplanes, e)
        self.dropout = nn.Dropout(dropout)
        if len(head_classes) == 1:
            self.fc = nn.Linear(e, head_classes[0])
        else:
            self.heads = nn.ModuleList([nn.Linear(e, k2) for k2 in head_classes])
        for m in self.modules():  # torchvision's video ResNet initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_levels(self, x, head=0):
        out = {}
        y = self.stem(x)
        out["stem"] = y
        for i in range(1, 5):
            y = getattr(self, "layer%d" % i)(y)
            out["layer%d" % i] = y
        f = torch.flatten(F.adaptive_avg_pool3d(y, 1), 1)
        out["pool"] = f
        if self.has_embed:
            f = self.embed(f)
            out["embed"] = f
        out["logits"] = self.head_module(head)(self.dropout(f))
        return out

    def features(self, x):
        y = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        f = torch.flatten(F.adaptive_avg_pool3d(y, 1), 1)
        return self.embed(f) if self.has_embed else f


def build_model(config):
    """MLFDResNet or MLFDVideoResNet for a ModelConfig dict (ValueError for other archs)."""
    if config.get("arch") in VIDEO_ARCHS:
        return MLFDVideoResNet.from_config(config)
    return MLFDResNet.from_config(config)


def torchvision_incompatibility(config):
    """Why a config cannot be a torchvision ResNet (a list of reasons; empty when it can)."""
    why = []
    video = config.get("arch") in VIDEO_ARCHS
    if config.get("arch") not in MIRRORED_ARCHS:
        why.append("arch is '%s' (torchvision's ResNets are %s)" %
                   (config.get("arch"), ", ".join(MIRRORED_ARCHS)))
    if config.get("small_stem", False):
        why.append("small_stem is on (torchvision's stem has spatial stride 2 and a 7x7 kernel)"
                   if video else
                   "small_stem is on (torchvision's conv1 is 7x7 stride 2 followed by a max-pool)")
    if float(config.get("width", 1.0)) != 1.0:
        why.append("width is %g (torchvision's ResNets have width 1)" % config.get("width"))
    if int(config.get("in_channels", 3)) != 3:
        why.append("in_channels is %d (torchvision's conv1 takes 3 channels)" % config["in_channels"])
    feature_dim = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "r3d_18": 512, "mc3_18": 512,
                   "r2plus1d_18": 512}.get(config.get("arch"))
    embed = int(config.get("embed_dim", 0))
    if embed > 0 and embed != feature_dim:
        why.append("it has an MLFD embed layer (embed_dim %d; torchvision's fc reads the %s pooled "
                   "features directly)" % (embed, feature_dim))
    if len(config.get("head_classes", [])) != 1:
        why.append("it has %d heads (torchvision has one fc)" % len(config.get("head_classes", [])))
    return why


def make_torchvision(arch, num_classes):
    import torchvision
    import torchvision.models.video  # noqa: F401 - not imported by torchvision.models in 0.14
    family = torchvision.models.video if arch in VIDEO_ARCHS else torchvision.models
    return getattr(family, arch)(num_classes=num_classes)


# ------------------------------------------------------------------------------------------------
# Checkpoint and image store reading (h5py)


def _attr_str(f, key, path):
    if key not in f.attrs:
        raise CheckpointError("%s: root attribute '%s' is missing" % (path, key))
    v = f.attrs[key]
    return v.decode() if isinstance(v, bytes) else str(v)


def _open_format(path, expected, what):
    """Opens an HDF5 file of ours for reading, checking its root 'format' attribute."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError("%s: cannot open as HDF5 (%s)" % (path, e))
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != expected:
        f.close()
        raise CheckpointError('%s: not %s (format is %r, expected "%s")' % (path, what, fmt, expected))
    return f


def read_checkpoint_meta(path):
    """The root metadata of a checkpoint: format_version, kind, model (dict), datasets (list of
    HeadInfo dicts), epoch, metrics, provenance (dicts). Raises CheckpointError."""
    with _open_format(path, CHECKPOINT_FORMAT, "a checkpoint") as f:
        version = int(f.attrs.get("format_version", -1))
        if version != CHECKPOINT_VERSION:
            raise CheckpointError("%s: checkpoint format version %d, this tool reads %d" %
                                  (path, version, CHECKPOINT_VERSION))
        meta = {"format_version": version, "kind": _attr_str(f, "kind", path)}
        for key in ("model", "datasets", "metrics", "provenance"):
            text = _attr_str(f, key, path) if key != "provenance" or key in f.attrs else "{}"
            try:
                meta[key] = json.loads(text)
            except ValueError:
                raise CheckpointError("%s: attribute '%s' is not valid JSON" % (path, key))
        meta["epoch"] = int(f.attrs.get("epoch", 0))
    return meta


def read_checkpoint_state(path):
    """Every parameter and buffer of a checkpoint: {dotted name: torch.Tensor} (CPU)."""
    import h5py
    state = {}
    with h5py.File(path, "r") as f:
        if "state" not in f:
            raise CheckpointError("%s: has no /state group" % path)
        for name, d in f["state"].items():
            if not isinstance(d, h5py.Dataset):
                raise CheckpointError("%s: /state/%s is a group, expected a dataset" % (path, name))
            state[name] = torch.from_numpy(np.array(d[()]))  # np.array keeps 0-d scalars 0-d
    return state


def load_strict(model, state, what="checkpoint"):
    """Loads `state` into `model`, listing every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    problems = []
    for k, v in own.items():
        if k not in state:
            problems.append("missing %s (model expects %s)" % (k, list(v.shape)))
        elif tuple(state[k].shape) != tuple(v.shape):
            problems.append("mis-shaped %s: %s %s, model %s" % (k, what, list(state[k].shape),
                                                                 list(v.shape)))
    for k in state:
        if k not in own:
            problems.append("unexpected %s" % k)
    if problems:
        shown = problems[:30] + (["... and %d more" % (len(problems) - 30)] if len(problems) > 30 else [])
        raise CheckpointError("%s does not match the model (%d problem(s)):\n  %s" %
                              (what, len(problems), "\n  ".join(shown)))
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)
    return model


def load_checkpoint(path):
    """Rebuilds a (video) ResNet checkpoint of ours as an MLFDResNet or MLFDVideoResNet (eval mode)
    and returns (model, meta)."""
    meta = read_checkpoint_meta(path)
    arch = meta["model"].get("arch")
    if arch not in MIRRORED_ARCHS:
        raise CheckpointError("%s: architecture '%s' is not supported by mlfd_torch (it rebuilds %s)" %
                              (path, arch, ", ".join(MIRRORED_ARCHS)))
    try:
        model = build_model(meta["model"])
    except ValueError as e:
        raise CheckpointError("%s: model config: %s" % (path, e))
    load_strict(model, read_checkpoint_state(path), path)
    return model.eval(), meta


def head_info(meta, dataset=None):
    """The HeadInfo dict for `dataset` (default: the only/first one)."""
    ds = meta["datasets"]
    if dataset is None:
        return ds[0]
    for d in ds:
        if d["dataset"] == dataset:
            return d
    raise CheckpointError("the model has no head for dataset '%s' (it predicts: %s)" %
                          (dataset, ", ".join(d["dataset"] for d in ds)))


def normalize(images, mean, std):
    """uint8 N x H x W x C (as stored) -> float32 N x C x H x W, (x/255 - mean)/std, computed as
    the C++ loader does (x * 1/(255 std) + (-mean/std) in float32)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    shift = np.array([-m / s for m, s in zip(mean, std)], dtype=np.float32)
    y = x.astype(np.float32) * scale + shift
    return torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))


def read_store_meta(path):
    """An image store's name, class names, size, channels and mean/std (no pixels)."""
    with _open_format(path, "mlfd.image_store", "an image store") as f:
        return {"name": _attr_str(f, "name", path),
                "class_names": [s.decode() if isinstance(s, bytes) else s
                                for s in f["class_names"][()]],
                "mean": [float(v) for v in f.attrs["mean"]], "std": [float(v) for v in f.attrs["std"]],
                "height": int(f.attrs["height"]), "width": int(f.attrs["width"]),
                "channels": int(f.attrs["channels"]), "splits": sorted(f["splits"])}


def read_store(path, split=None):
    """read_store_meta() plus the split's rows (all rows when split is None), their images (uint8
    N x H x W x C) and labels."""
    import h5py
    meta = read_store_meta(path)
    with h5py.File(path, "r") as f:
        if split is None:
            rows = np.arange(f["images"].shape[0], dtype=np.int64)
        else:
            if "splits/" + split not in f:
                raise CheckpointError("%s: no split '%s' (available: %s)" %
                                      (path, split, ", ".join(meta["splits"])))
            rows = f["splits/" + split][()]
        meta["rows"] = rows
        meta["images"] = f["images"][()][rows]
        meta["labels"] = f["labels"][()][rows]
    return meta


def short_list(names, n=5):
    names = list(names)
    return ", ".join(names[:n]) + (", ... (%d in all)" % len(names) if len(names) > n else "")


# ------------------------------------------------------------------------------------------------
# Writing (checkpoints from PyTorch models), provenance and atomic output


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(tool, options, inputs):
    """The provenance record of docs/formats.md for a Python tool; inputs: {role: path}."""
    import os
    import platform
    import shlex
    import socket
    import subprocess
    import sys
    import time
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__}
    try:
        import h5py
        versions["h5py"] = h5py.__version__
        versions["hdf5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    try:
        import torchvision
        versions["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        if rev.returncode == 0:
            versions["git_revision"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"tool": tool, "command_line": " ".join(shlex.quote(a) for a in sys.argv),
            "options": options,
            "inputs": {role: {"path": p, "sha256": sha256_file(p), "bytes": os.path.getsize(p)}
                       for role, p in inputs.items()},
            "versions": versions,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname()}


class AtomicOutput:
    """Writes to `.<name>.tmp-<pid>-<n>` next to `path` and renames on success (as the C++ side):
    a killed tool never leaves a file that looks complete. Refuses to overwrite a file that is not
    of `expected_format` (an HDF5 root attribute), or not HDF5, when expected_format is given."""
    _count = 0

    def __init__(self, path, expected_format=None):
        import os
        self.path = path
        d, base = os.path.split(path)
        if d and not os.path.isdir(d):
            raise CheckpointError("%s: directory %s does not exist" % (path, d))
        if os.path.exists(path) and expected_format is not None:
            ours = False
            try:
                import h5py
                with h5py.File(path, "r") as f:
                    fmt = f.attrs.get("format")
                    ours = (fmt.decode() if isinstance(fmt, bytes) else fmt) == expected_format
            except (OSError, ImportError):
                ours = False
            if not ours:
                raise CheckpointError("%s: exists and is not a %s file; refusing to overwrite it" %
                                      (path, expected_format))
        AtomicOutput._count += 1
        self.temp = os.path.join(d, ".%s.tmp-%d-%d" % (base, os.getpid(), AtomicOutput._count))

    def __enter__(self):
        return self.temp

    def __exit__(self, exc_type, exc, tb):
        import os
        if exc_type is None:
            os.replace(self.temp, self.path)
        elif os.path.exists(self.temp):
            os.remove(self.temp)
        return False


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def write_checkpoint(path, state, model_config, datasets, kind, prov, epoch=0, metrics=None):
    """Writes an "mlfd.checkpoint" (docs/formats.md) atomically: `state` {dotted name: tensor}
    under /state (floating point as float32, integers as int64), the config and HeadInfo list as
    JSON attributes and /class_names/<dataset>."""
    import h5py
    with AtomicOutput(path, CHECKPOINT_FORMAT) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CHECKPOINT_FORMAT
            f.attrs["format_version"] = np.int64(CHECKPOINT_VERSION)
            f.attrs["kind"] = kind
            f.attrs["model"] = _json(model_config)
            f.attrs["datasets"] = _json(datasets)
            f.attrs["epoch"] = np.int64(epoch)
            f.attrs["metrics"] = _json(metrics if metrics is not None else {})
            for d in datasets:
                f.create_dataset("class_names/" + d["dataset"],
                                 data=np.array(d["class_names"], dtype=object),
                                 dtype=h5py.string_dtype("utf-8"))
            for name, t in state.items():
                t = t.detach().cpu()
                if t.is_floating_point():
                    a = t.to(torch.float32).numpy()
                elif t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                    a = t.to(torch.int64).numpy()
                else:
                    raise CheckpointError("%s: tensor dtype %s cannot be stored" % (name, t.dtype))
                f.create_dataset("state/" + name, data=a)
            f.attrs["provenance"] = _json(prov)


def main(argv=None):
    import argparse
    import sys
    p = argparse.ArgumentParser(
        prog="mlfd_torch.py",
        description="Rebuilds a (video) ResNet checkpoint of this project as tools/mlfd_torch.py's "
                    "MLFDResNet or MLFDVideoResNet (strict load) and prints a JSON summary: kind, epoch, model "
                    "config, heads, tensor and parameter counts.",
        epilog="Example:\n  /usr/bin/python3 tools/mlfd_torch.py runs/demo/teachers/mnist.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint (.h5) written by this project")
    args = p.parse_args(argv)
    try:
        model, meta = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        print("mlfd_torch.py: error: %s" % e, file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print("mlfd_torch.py: error: %s: %s: %s" % (args.checkpoint, type(e).__name__, e), file=sys.stderr)
        return 1
    print(json.dumps({"checkpoint": args.checkpoint, "kind": meta["kind"], "epoch": meta["epoch"],
                      "model": meta["model"],
                      "heads": [{"dataset": d["dataset"], "classes": len(d.get("class_names", []))}
                                for d in meta["datasets"]],
                      "tensors": len(model.state_dict()),
                      "parameters": int(sum(t.numel() for t in model.parameters())),
                      "levels": model.level_names()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
