#!/bin/bash
# Session 11: the SFT-only sanity check (issue 14 part 1) on a second base of the same recipe, trained
# from training seed 1, on the tuning scenes 5000-5099 (ID). Sequential and resumable: each run
# resumes from its --out. Run from a checkout of the commit it names: bash scripts/session11_second_base.sh
set -u
cd "$(dirname "$0")/.."
P="${PYTHON:-.venv/bin/python}"
D=runs/usb/diag11
mkdir -p $D
B=$(ls -d runs/usb/sft_*/ 2>/dev/null | head -1)
if [ -z "$B" ] || [ ! -f "$B/policy/model.safetensors" ]; then
  # Stages 1-3 of the benchmark from training seed 1 (demonstrations, SFT); stopped once the base is saved.
  $P -m benchmarks.run --task usb --methods "" --no-ablations --seed 1 --out $D/base_build > $D/base_build.log 2>&1 &
  while ! ls runs/usb/sft_*/policy/model.safetensors >/dev/null 2>&1; do sleep 30; done
  sleep 20; pkill -f "benchmarks.run --task usb --methods"; sleep 5
  B=$(ls -d runs/usb/sft_*/ | head -1)
fi
B=${B%/}
echo "$(date) base $B" >> $D/driver.log
[ -f $D/base_tuning_id.jsonl ] || $P -m benchmarks.evaluate --task usb --policy $B --rollouts 100 --split id --seed 5000 --workers 2 --out $D/base_tuning_id.jsonl > $D/base_eval.log 2>&1
COMMON="--task usb --base $B --rounds 1 --pairs 30 --steps 300 --lr 3e-5 --eval-rollouts 100 --eval-splits id --eval-seed 5000 --workers 2 --shared-pairs $D/pairs_r1_30"
run() { name=$1; shift; [ -f $D/$name/round_1/round.json ] && return; echo "$(date) start $name" >> $D/driver.log; $P -m flowpro.train rpro $COMMON --out $D/$name "$@" > $D/$name.log 2>&1; echo "$(date) end $name rc=$?" >> $D/driver.log; }
run sft_only_share0.8_gap10 --method flowpro --loss sft --sft-share 0.8 --max-bridge-gap 0.01
run sft_only_gap10 --method flowpro --loss sft --max-bridge-gap 0.01
run rpro_b100_share0.8_gap10 --method flowpro --loss rpro --beta 100 --sft-share 0.8 --max-bridge-gap 0.01
run sft_only_share0.8_gap10_seed1 --method flowpro --loss sft --sft-share 0.8 --max-bridge-gap 0.01 --seed 1
run dagger_buffered_share0.8_gap10 --method dagger_buffered --sft-share 0.8 --max-bridge-gap 0.01
echo "$(date) all done" >> $D/driver.log
