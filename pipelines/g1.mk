# The paper's group G1: CIFAR-100, TinyImageNet and ImageNet-Sketch (download them first:
# docs/datasets.md), at 224 px with the paper's recipe. Runs on a GPU:
#   make -f Makefile.pipeline PIPELINE=g1 DATA_ROOT=/datasets DEVICE=cuda SEEDS="1 2 3"
# The architecture of each dataset's teacher (and so of its students) follows the paper's
# homogeneous-group runs; change TEACHER_OPTS_<ds> to try the others.
DATASETS = cifar100 tiny_imagenet imagenet_sketch
SEEDS ?= 1

# Stage 1: backbone -> pool -> embed (E = 2048) -> linear, label smoothing 0.1, resize to 224 x 224,
# AutoAugment (ImageNet policy), AdamW one-cycle, weight decay 0.05.
RECIPE = --size 224 --autoaugment --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule onecycle \
  --batch-size 64 --workers 8
TEACHER_OPTS = $(RECIPE) --embed-dim 2048 --label-smoothing 0.1 --epochs 100
TEACHER_OPTS_cifar100 = --arch resnet18
TEACHER_OPTS_tiny_imagenet = --arch efficientnet_b0
TEACHER_OPTS_imagenet_sketch = --arch seresnext26t_32x4d
BASELINE_OPTS = $(RECIPE) --arch resnet18 --embed-dim 2048 --label-smoothing 0.1 --label-space heads --epochs 100

# Stage 2: fuse the 7 x 7 last maps, S = 4096 as the paper's code, Cout = 512 (ResNet-18's layer4),
# dropout 0.5; teacher maps cached from clean images as the official code.
JOINT_BUILD_OPTS = --adaptor-dim 4096 --cout 512 --dropout 0.5 --size 224
JOINT_OPTS = --size 224 --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule onecycle --batch-size 64 \
  --workers 8 --sampling proportional --epochs 20
JOINT_MAPS = cached

# Stage 3: the paper's student loss (mlfd), same recipe as stage 1.
STUDENT_OPTS = $(RECIPE) --epochs 100 --pool-mismatch
STUDENT_SIGNALS = online
METHODS = kd fitnet mlfd
