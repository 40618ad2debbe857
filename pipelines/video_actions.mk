# The three action-recognition benchmarks as one group, for users with the data (docs/datasets.md
# says where each goes): UCF101 (official split 1), HMDB51 (split 1) and Kinetics-400 (train/val
# videos; its validation set is the test split here and 5% of train is carved out for validation,
# as the manifest says). Distinct label spaces, one domain (human actions in web video).
#   make -f Makefile.pipeline PIPELINE=video_actions DATA_ROOT=/datasets RUN=runs/video_actions DEVICE=cuda
# Kinetics-400 as decoded frames instead of videos: MANIFEST_kinetics400=data_manifests/kinetics400_frames.json.
#
# The MLFD paper gives no video recipe this toolkit could copy, so this is the standard one of
# torchvision's video-classification reference (references/video_classification, the recipe of its
# r3d_18 / mc3_18 / r2plus1d_18 weights): 16-frame clips at 112 x 112, SGD with momentum 0.9 and
# weight decay 1e-4, 10 warm-up epochs, 45 epochs, lr 0.01 at batch 32 (its 0.64 at 64 x 24 clips
# scaled linearly), random resized crops and horizontal flips drawn once per clip. Its schedule drops
# the rate tenfold at epochs 20 and 30; the toolkit's schedules are constant, step (every k epochs),
# cosine and one-cycle, so this group uses cosine after the warm-up. Every model is trained from
# scratch (papers usually fine-tune UCF101 and HMDB51 from Kinetics-400 weights: expect lower
# accuracies from scratch on the two small datasets). Sized for GPUs: on a CPU machine run
# pipelines/video_sprites.mk instead. Not run by this project (no GPU and none of the data here):
# the manifests are tested on synthetic trees of each layout, the stages on synthetic clips.
DATASETS = ucf101 hmdb51 kinetics400
SEEDS ?= 1

# 32 frames sampled uniformly over each video, stored at the manifests' 112 x 112; training takes a
# random run of 16 of them, evaluation the centred one.
PREPARE_OPTS = --frames 32
PREPARE_OPTS_kinetics400 = --frames 32 --skip-bad=1

EPOCHS ?= 45
TRAIN_COMMON = --optimizer sgd --lr 0.01 --momentum 0.9 --weight-decay 1e-4 --schedule cosine --warmup-epochs 10 \
  --size 112 --rrc --hflip --clip-frames 16 --batch-size 32 --workers 8

# Stage 1: one video ResNet per dataset (torchvision's architectures, full width and stem).
TEACHER_OPTS = $(TRAIN_COMMON) --embed-dim 512 --label-smoothing 0.1 --epochs $(EPOCHS)
TEACHER_OPTS_ucf101 = --arch r3d_18
TEACHER_OPTS_hmdb51 = --arch r3d_18
TEACHER_OPTS_kinetics400 = --arch r2plus1d_18

# Joint-training baseline: one r2plus1d_18 on the three datasets, one head per dataset.
BASELINE_OPTS = $(TRAIN_COMMON) --arch r2plus1d_18 --embed-dim 512 --label-smoothing 0.1 --label-space heads \
  --epochs $(EPOCHS)

# Stage 2: T* fuses the three teachers' layer4 maps (512 x 2 x 7 x 7 for 16 frames of 112 px),
# S = 512, Cout = 512, dropout 0.5, each dataset's head starting from its own teacher's logits.
JOINT_BUILD_OPTS = --level=layer4 --adaptor-dim 512 --cout 512 --dropout 0.5 --residual-logits
JOINT_OPTS = --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule cosine --batch-size 32 --workers 8 \
  --sampling proportional --size 112 --rrc --hflip --epochs 10
JOINT_MAPS = online

# Stage 3: students with their dataset's teacher's architecture and recipe, signals online.
STUDENT_OPTS = $(TRAIN_COMMON) --epochs $(EPOCHS)
STUDENT_SIGNALS = online
METHODS = kd fitnet mlfd
