#!/bin/bash
# session 10 tuning-scene runs, sequential and resumable (each run resumes from its --out)
cd /work/main
P=.venv/bin/python
B=runs/usb/sft_6a94f037aa
D=runs/usb/diag10
while [ ! -f $B/policy/model.safetensors ]; do sleep 30; done
sleep 20; pkill -f "benchmarks.run --task usb --methods" ; sleep 5
[ -f $D/base_tuning_id.jsonl ] || $P -m benchmarks.evaluate --task usb --policy $B --rollouts 100 --split id --seed 5000 --workers 2 --out $D/base_tuning_id.jsonl > $D/base_eval.log 2>&1
COMMON="--task usb --base $B --rounds 1 --pairs 30 --steps 300 --lr 3e-5 --eval-rollouts 100 --eval-splits id --eval-seed 5000 --workers 2 --shared-pairs $D/pairs_r1_30"
run() { name=$1; shift; [ -f $D/$name/round_1/round.json ] && return; echo "$(date) start $name" >> $D/driver.log; $P -m flowpro.train rpro $COMMON --out $D/$name "$@" > $D/$name.log 2>&1; echo "$(date) end $name rc=$?" >> $D/driver.log; }
run sft_only_share0.8 --method flowpro --loss sft --sft-share 0.8
run sft_only_share0.8_gap10 --method flowpro --loss sft --sft-share 0.8 --max-bridge-gap 0.01
run rpro_b100_share0.8_gap10 --method flowpro --loss rpro --beta 100 --sft-share 0.8 --max-bridge-gap 0.01
run dagger_buffered_share0.8 --method dagger_buffered --sft-share 0.8
run sft_only_gap10 --method flowpro --loss sft --max-bridge-gap 0.01
run sft_only_share0.8_gap10_seed1 --method flowpro --loss sft --sft-share 0.8 --max-bridge-gap 0.01 --seed 1
echo "$(date) all done" >> $D/driver.log
