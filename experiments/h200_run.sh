#!/usr/bin/env bash
# The prepared GPU check of this project (for an NVIDIA H200, 15 minutes of device time in all; not yet run):
#   1. benchmarks/bench.py on cuda at batch 36: the paper's model in fp32 (both formulations), bf16, compile;
#      the candidate model below in fp32 and bf16;
#   2. three training runs side by side on the one GPU for TRAIN_SECONDS each, on 20,000 built-in
#      5-cube scenes (rendered there), stopped by SIGINT (which saves a checkpoint);
#   3. each run's checkpoint exported and evaluated on the 200 built-in test scenes, 3 context views.
# Usage: OUT=folder bash experiments/h200_run.sh 2>&1 | tee folder/console.log   (the device tool sets OUT)
set -u
OUT=${OUT:-out_h200}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
SCENES=${SCENES:-20000}
BENCH=${BENCH:-1}   # BENCH=0: skip the benchmarks (a dry run on a CPU)
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - t0 )) s: $*"; }

if [ -d .whl ]; then  # tensorboardX is not in the GPU machine's image
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

DATA=${DATA:-data/h200_sm5}
RUNS=${RUNS:-runs_h200}
mkdir -p "$OUT" "$RUNS"
# the candidate: the demo's geometric representation with a wider, deeper generator
CAND="--representation geometric --layers 8 --shared_core true --upsample broadcast --r_dim 64 --h_dim 64"
stamp "render 20000 + 200 scenes (before the benchmarks: its workers would take the cores" \
    "that launch their kernels)"
python3 dataset/shepard_metzler.py --out $DATA --parts 5 --train_scenes $SCENES --test_scenes 200 --seed 0 \
    --workers 14 > "$RUNS/render.log" 2>&1
tail -1 "$RUNS/render.log"

if [ "$BENCH" = 1 ]; then
stamp "bench: paper model, batch 36"
timeout 90 python3 benchmarks/bench.py --device cuda --batch_size 36 --steps 10 --warmup 3
timeout 60 python3 benchmarks/bench.py --device cuda --batch_size 36 --steps 10 --warmup 3 --impl this \
    --dtype bfloat16
stamp "bench: candidate model, batch 36"
timeout 45 python3 benchmarks/bench.py --device cuda --batch_size 36 --steps 20 --warmup 5 --impl this $CAND
timeout 45 python3 benchmarks/bench.py --device cuda --batch_size 36 --steps 20 --warmup 5 --impl this $CAND \
    --dtype bfloat16
fi

COMMON="--train_data_dir $DATA/train --test_data_dir $DATA/test --batch_size 36 --gradient_steps 100000
        --sigma_i 1.0 --sigma_f 0.3 --sigma_n 1000 --min_context 2 --max_context 5 --seed 0 --workers 4
        --log_interval 500 --save_interval 1000 --keep 1 --eval_scenes 0 --root_log_dir $RUNS"
stamp "train A, B, C for $TRAIN_SECONDS s each, side by side"
timeout -s INT $TRAIN_SECONDS python3 train.py $COMMON --log_dir A $CAND --mu_i 5e-4 --mu_f 1e-4 \
    --mu_n 20000 > "$RUNS/train_A.log" 2>&1 &
timeout -s INT $TRAIN_SECONDS python3 train.py $COMMON --log_dir B --representation tower --layers 8 \
    --shared_core true --upsample broadcast --r_dim 128 --h_dim 64 --mu_i 5e-4 --mu_f 1e-4 --mu_n 20000 \
    > "$RUNS/train_B.log" 2>&1 &
timeout -s INT $TRAIN_SECONDS python3 train.py $COMMON --log_dir C --preset demo --mu_n 20000 \
    > "$RUNS/train_C.log" 2>&1 &
wait
for r in A B C; do tail -c 600 "$RUNS/train_$r.log"; echo; done

stamp "export and evaluate"
for r in A B C; do
    ck=$(ls $RUNS/$r/checkpoints/ckpt-*.pt 2>/dev/null | tail -1)
    [ -n "$ck" ] || continue
    python3 checkpoint.py "$ck" "$OUT/$r.pt" && \
        (timeout 90 python3 evaluate.py --checkpoint "$OUT/$r.pt" --data_dir $DATA/test --scenes 200 \
             --context 3 --no_progress --out $RUNS/$r/eval.json > $RUNS/$r/eval.txt 2>&1 &)
done
sleep 2; while pgrep -f evaluate.py > /dev/null; do sleep 1; done
for r in A B C; do echo "--- $r"; cat $RUNS/$r/eval.txt 2>/dev/null; done
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' $RUNS

if [ "$BENCH" = 1 ]; then
stamp "bench: paper model, batch 36, compiled"
# compiling L 12 takes minutes
timeout 200 python3 benchmarks/bench.py --device cuda --batch_size 36 --steps 10 --warmup 3 --impl this \
    --compile true
fi
stamp "done"
