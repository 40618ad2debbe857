# The benchmark group: two datasets that share a domain but not their labels, as in the paper's
# groups. Fashion-MNIST's classes split in two datasets with their own label spaces and images:
# fashion_tops (T-shirt/top, trouser, pullover, dress, coat, shirt) and fashion_shoes_bags (sandal,
# sneaker, bag, ankle boot); data-limited (200 training images per class), validation and test
# splits in full. Two teacher architectures; every student has its dataset's teacher's architecture.
# Every model is trained to its plateau on validation (the report's curves show it); model
# selection on the validation split, the test split is read by evaluate only.
#   make -f Makefile.pipeline PIPELINE=bench RUN=$HOME/mlfd-runs/bench SEEDS="1 2 3"
# Rows: the individual model (teacher), the joint-training baseline, T*, KD and FitNet students
# from the dataset's own teacher, the MLFD student; ablations as variants (below).
DATASETS = fashion_tops fashion_shoes_bags
SEEDS ?= 1

# 1,200 and 800 training images; validation 3,600 and 2,400; test 6,000 and 4,000.
PREPARE_OPTS = --max-train-per-class 200

# Epochs of every stage-1 model and student (validated every 4th epoch and after the last: the
# validation splits are three times the training splits, so validating every epoch cost as much as
# training), and of T* (validated every epoch: its best epoch comes early).
EPOCHS ?= 40
JOINT_EPOCHS ?= 10
TRAIN_COMMON = --optimizer sgd --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 \
  --schedule cosine --warmup-epochs 2 --pad 2 --val-every 4

# Stage 1: small-image ResNets with the MLFD head (embed 128): ResNet-18 at a quarter width for the
# tops, ResNet-34 at an eighth for shoes and bags.
TEACHER_OPTS = $(TRAIN_COMMON) --batch-size 64 --small-stem --embed-dim 128 --label-smoothing 0.1 --epochs $(EPOCHS)
TEACHER_OPTS_fashion_tops = --arch resnet18 --width 0.25
TEACHER_OPTS_fashion_shoes_bags = --arch resnet34 --width 0.125

# Joint-training baseline: one ResNet-18 (quarter width) on both datasets, one head per dataset,
# each step half from each dataset's images (batch 128).
BASELINE_OPTS = $(TRAIN_COMMON) --batch-size 128 --arch resnet18 --small-stem --width 0.25 --embed-dim 128 \
  --label-smoothing 0.1 --label-space heads --epochs $(EPOCHS)

# Stage 2: T* fuses both teachers' layer4 maps (4x4 at 28 px), S = 128, Cout = 128; each dataset's
# head adds its own teacher's logits (--residual-logits); trained on both datasets with the
# teachers' maps online on the augmented views.
JOINT_BUILD_OPTS = --level=layer4 --adaptor-dim 128 --dropout 0.5 --residual-logits
JOINT_OPTS = --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule cosine --batch-size 128 \
  --sampling proportional --pad 2 --epochs $(JOINT_EPOCHS)
JOINT_MAPS = online

# Stage 3: students from scratch with the teachers' recipe; teacher signals online on the
# student's own augmented batch (the teacher sees exactly the student's view).
STUDENT_OPTS = $(TRAIN_COMMON) --batch-size 64 --epochs $(EPOCHS)
STUDENT_SIGNALS = online
METHODS = kd fitnet mlfd

# Ablations (docs/pipeline.md, "Variants and ablation tables"), each against the MLFD row, paired
# by seed. Loss terms: KD + CE without map terms, KD + the last fused map, without CE (the base is
# MLFD's every fused level + dense level). T*: heads without the teacher's logits, fusion at
# layer3. Patient and consistent students (distill_student --mix, --epochs-multiple): mixup of the
# shared view (the student's batch, which the online T* sees too) for the teacher's 40 epochs and
# for twice as long. The fair references for the patient student: the individual model trained for
# twice the epochs too (`epochs_x2`, evaluated as teacher@epochs_x2) and the KD student from the
# dataset's own teacher with the same mixup and schedule (`kd_mixup_x2`, kd@kd_mixup_x2). And the
# patient student from T* without the map terms (`kd_ce_mixup_x2`): against kd_mixup_x2 it
# isolates what T* gives as the source of the soft targets, the recipe held fixed.
VARIANTS = kd_ce kd_last no_ce plain_heads fuse_layer3 mixup mixup_x2 epochs_x2 kd_mixup_x2 kd_ce_mixup_x2
VARIANT_OPTS_kd_ce = --w-feat 0
VARIANT_OPTS_kd_last = --pairs layer4:fused:0.2
VARIANT_OPTS_no_ce = --w-ce 0
VARIANT_STAGE_plain_heads = joint
VARIANT_DROP_plain_heads = --residual-logits
VARIANT_STAGE_fuse_layer3 = joint
VARIANT_DROP_fuse_layer3 = --level=layer4
VARIANT_OPTS_fuse_layer3 = --level=layer3 --stages 1
VARIANT_OPTS_mixup = --mix mixup
VARIANT_OPTS_mixup_x2 = --mix mixup --epochs-multiple 2
VARIANT_STAGE_epochs_x2 = teacher
VARIANT_DROP_epochs_x2 = --epochs=$(EPOCHS)
VARIANT_OPTS_epochs_x2 = --epochs $(shell expr 2 '*' $(EPOCHS))
VARIANT_METHOD_kd_mixup_x2 = kd
VARIANT_OPTS_kd_mixup_x2 = --mix mixup --epochs-multiple 2
VARIANT_OPTS_kd_ce_mixup_x2 = --w-feat 0 --mix mixup --epochs-multiple 2
# Four times the schedule, not run by default (one seed of the pair takes about half an hour):
#   make -j2 -f Makefile.pipeline PIPELINE=bench RUN=... SEEDS=1 LONG_VARIANTS="mixup_x4 epochs_x4"
LONG_VARIANTS ?=
VARIANTS += $(LONG_VARIANTS)
VARIANT_OPTS_mixup_x4 = --mix mixup --epochs-multiple 4
VARIANT_STAGE_epochs_x4 = teacher
VARIANT_DROP_epochs_x4 = --epochs=$(EPOCHS)
VARIANT_OPTS_epochs_x4 = --epochs $(shell expr 4 '*' $(EPOCHS))

# The report's paired comparisons beyond the ablation tables (report --compare): the patient MLFD
# student against the references given its schedule, the joint-training baseline and T*; KD with
# and without the patient recipe against the individual model.
REPORT_COMPARE = mlfd@mixup_x2:teacher@epochs_x2 mlfd@mixup_x2:kd@kd_mixup_x2 mlfd@mixup_x2:joint_baseline \
  mlfd@mixup_x2:kd mlfd@mixup_x2:teacher kd@kd_mixup_x2:teacher@epochs_x2 teacher@epochs_x2:teacher \
  mlfd:teacher mlfd:joint_baseline kd:teacher mlfd@kd_ce_mixup_x2:kd@kd_mixup_x2 \
  mlfd@kd_ce_mixup_x2:teacher@epochs_x2 mlfd@mixup_x2:mlfd@kd_ce_mixup_x2 \
  mlfd@mixup_x4:teacher@epochs_x4 mlfd@mixup_x4:mlfd@mixup_x2 teacher@epochs_x4:teacher@epochs_x2
