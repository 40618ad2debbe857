# The related methods in their own setting: three teachers trained on the same dataset
# (Fashion-MNIST; two ResNet-18 seeds and a ResNet-34), then one smaller student per method.
#   make -f Makefile.pipeline PIPELINE=fmnist_multi SEEDS="1 2 3" -j2
# Rows: the student's architecture trained alone ("teacher", with the students' recipe), the three
# teachers, uniform multi-teacher KD (mtkd), AMTML-KD (amtml), FEED with teacher a only (feed1),
# parallel FEED with all three (feed), sequential FEED's second generation (feed2: a fresh student
# of the same architecture taught by feed1 through a fresh transform), UNIC (unic). Model selection
# on the validation split.
DATASETS = fashion_mnist
SEEDS ?= 1
# 300 training images per class (3,000 of 54,000); validation 6,000 and test 10,000 in full.
PREPARE_OPTS_fashion_mnist = --max-train-per-class 300

TRAIN_COMMON = --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
  --schedule cosine --warmup-epochs 1 --pad 2
EPOCHS = 6
# The student's architecture (ResNet-18 at an eighth of the width) trained alone: the "teacher"
# row and the --like of every student.
TEACHER_OPTS = $(TRAIN_COMMON) --batch-size 128 --small-stem --embed-dim 128 --label-smoothing 0.1 --epochs $(EPOCHS)
TEACHER_OPTS_fashion_mnist = --arch resnet18 --width 0.125
BASE_MODELS = teacher
# The three teachers: twice the student's width, or a deeper ResNet-34; seeds <s>1, <s>2, <s>3.
TEAM = a b c
TEAM_OPTS_a = --arch resnet18 --width 0.25
TEAM_OPTS_b = --arch resnet34 --width 0.25
TEAM_OPTS_c = --arch resnet18 --width 0.25
TEAM_SEED_SUFFIX_a = 1
TEAM_SEED_SUFFIX_b = 2
TEAM_SEED_SUFFIX_c = 3

STUDENT_OPTS = $(TRAIN_COMMON) --batch-size 128 --epochs $(EPOCHS)
STUDENT_SIGNALS = online
METHODS = mtkd amtml feed1 feed feed2 unic
TEAM3 = $(1)/team/%_a.h5 $(1)/team/%_b.h5 $(1)/team/%_c.h5
TEACHERS_mtkd = $(TEAM3)
TEACHERS_amtml = $(TEAM3)
TEACHERS_feed = $(TEAM3)
TEACHERS_unic = $(TEAM3)
TEACHERS_feed1 = $(1)/team/%_a.h5
METHOD_feed1 = feed
TEACHERS_feed2 = $(1)/students/feed1_%.h5
METHOD_feed2 = feed
NODE_OPTS_unic = --unic-hidden 256
