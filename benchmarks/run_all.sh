#!/usr/bin/env bash
# Every benchmark in sequence (about 3 hours on 2 CPU cores); logs in benchmarks/out/*.log.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p out
python train_speed.py --model minilm --steps 40 --repeats 3 > out/train_speed_minilm.log 2>&1
python train_speed.py --model minilm --steps 40 --repeats 3 --isa avx2 --data snli3200 > out/train_speed_minilm_avx2.log 2>&1
python process_speed.py --model minilm --steps 40 --repeats 3 > out/process_speed_minilm.log 2>&1
python profile_step.py --model minilm --isa avx2 > out/profile_step_minilm_avx2.log 2>&1
python encode_speed.py --model minilm --repeats 3 > out/encode_speed_minilm.log 2>&1
python data_prep.py --repeats 3 > out/data_prep.log 2>&1
python train_speed.py --model bert-base --steps 8 --repeats 3 --quick > out/train_speed_bert-base.log 2>&1
python train_speed.py --model bert-base --steps 8 --repeats 3 --quick --isa avx2 --data snli3200 > out/train_speed_bert-base_avx2.log 2>&1
python profile_step.py --model bert-base --isa avx2 --steps 3 > out/profile_step_bert-base_avx2.log 2>&1
python parity.py --same-batches --also-bf16 > out/parity.log 2>&1
python seed_spread.py --seeds 43,44 > out/seed_spread.log 2>&1
