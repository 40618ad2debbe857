# The related methods in MLFD's setting (teachers from distinct datasets): the demo group with
# UNIC, AMTML-KD, uniform multi-teacher KD and FEED students next to KD, FitNet and MLFD. It
# shares the demo's run folder, so after `make ... PIPELINE=demo` only the new students and their
# evaluations run, and the report holds every row:
#   make -f Makefile.pipeline PIPELINE=demo_multi SEEDS="1 2 3" -j2
# Teachers (distill_student --teacher, in order), per student dataset <ds>:
#   unic, feed    every stage-1 teacher of the group (MNIST's and Fashion-MNIST's): features only
#   amtml, mtkd   <ds>'s own teacher and T*: the teachers with logits in <ds>'s label space
include pipelines/demo.mk
RUN ?= runs/demo
METHODS = kd fitnet mlfd mtkd amtml feed unic
# UNIC's projectors: hidden 256 (the paper's 768 is for ViT-B's 768-d tokens; these teachers' maps
# have 64 and 128 channels).
NODE_OPTS_unic = --unic-hidden 256
