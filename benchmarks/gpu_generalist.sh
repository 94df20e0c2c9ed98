#!/bin/bash
# The generalist `nuclei` model trained further on one GPU, in one call of the device tool, then
# benchmarks/gpu_check.py. Two runs share the GPU, as a hedge (each small model leaves it mostly idle):
#   A: the shipped model continued (--init nuclei), batch 16, learning rate 4e-4 in a poly schedule;
#   B: the same recipe (the shipped model's first training config) from scratch at depth 4 (receptive field
#      about twice as large, 7.8 M parameters, 31 MB), tile 444, batch 12.
# Both hold out the same 60 validation images as the shipped model (val_fraction 0.1, seed 0, same names).
#
# Prepare here (the device gets only the repository, 64 MiB in all, so the data travels packed):
#   .venv/bin/python benchmarks/bench_generalist.py --pack .gpu/data     # 43 MB; .gpu/ in .git/info/exclude
#   # the tracked tree is 31 MB: leave data/ and the ISBI model behind for the call, and restore them after:
#   git rm -r -q --cached data src/biounet/pretrained/isbi2012-membranes.pt
#   printf '/data/\n/src/biounet/pretrained/isbi2012-membranes.pt\n' >> .git/info/exclude
#   device run (carry .gpu, timeout 540 s): bash benchmarks/gpu_generalist.sh cuda 6.8 $OUT
#   git reset -q; then delete the two lines from .git/info/exclude
# Check it here first on a few pairs: DATA=dir PY=.venv/bin/python bash benchmarks/gpu_generalist.sh cpu 2 /tmp/o
#
# Usage: bash benchmarks/gpu_generalist.sh DEVICE MINUTES OUTDIR   (8 files land in OUTDIR)
set -u
DEV=${1:-cuda}; MIN=${2:-6.8}; O=${3:-$OUT}
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "$DEV" = cpu ]; then AMP="--set amp=off"; else AMP="--set amp=auto"; fi
D=${DATA:-.gpu/data}
R=/tmp/gpuruns; rm -rf $R; mkdir -p $R
{ date; nvidia-smi; $PY -c "import torch;print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"; nproc; } > $O/env.txt 2>&1
$PY - "$R/b.yaml" <<'PYEOF'
import sys
import torch
import yaml
from biounet.pretrained import resolve_model
config = yaml.safe_load(torch.load(resolve_model("nuclei"), map_location="cpu", weights_only=True)["train_config"])
config["model"]["depth"], config["tile"], config["batch_size"] = 4, 444, 12
config.update(samples_per_epoch=12000, data_workers=6)
config["retain"]["share"] = 0.0
open(sys.argv[1], "w").write(yaml.safe_dump(config, sort_keys=False))
PYEOF
$PY -m biounet train --init nuclei --images $D/images --labels $D/labels --out $R/A \
  --minutes $MIN --device $DEV $AMP --quiet --set data.val_fraction=0.1 --set retain.share=0 --set retain.distill=0 \
  --set optim.lr=4e-4 --set optim.warmup=0.02 --set batch_size=16 --set samples_per_epoch=16000 --set data_workers=6 \
  > $O/A.out 2>&1 &
$PY -m biounet train --config $R/b.yaml --images $D/images --labels $D/labels --out $R/B --minutes $MIN \
  --device $DEV $AMP --quiet > $O/B.out 2>&1 &
wait
for r in A B; do cp $R/$r/model.pt $O/${r}_model.pt; cp $R/$r/log.csv $O/${r}_log.csv; done
date >> $O/env.txt
timeout 75 $PY benchmarks/gpu_check.py --steps 100 --device $DEV > $O/gpu_check.out 2>&1
date >> $O/env.txt
