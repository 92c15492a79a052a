#!/usr/bin/env bash
# Collects the BlockQNN-Bench table (README "BlockQNN-Bench"). Resumable: rerun the same
# command to continue every run where it stopped; bench/collect/<run>/search.db are committed.
#   nohup bash bench/collect.sh > bench/collect/collect.log 2>&1 &
# Each run is a plain search: python search.py experiment=bench_collect hydra.run.dir=... .
# Then: python bench/bench_table.py  (writes bench/data/blockqnn_bench.csv.gz)
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run() { local dir=$1; shift; python search.py experiment=bench_collect hydra.run.dir="bench/collect/$dir" "$@"; }
# Random search covers the space; Q-learning runs cover its good regions.
run random-0 seed=0 &
run qlearning-100 agent=qlearning seed=100 'agent.epsilon_schedule=[[1.0,6],[0.7,4],[0.4,4],[0.1,6]]'
run qlearning-101 agent=qlearning seed=101 'agent.epsilon_schedule=[[1.0,6],[0.7,4],[0.4,4],[0.1,6]]'
# The noise floor: the first 50 distinct blocks of random-0 trained again under seeds 1 and 2.
python bench/bench_table.py --noise-blocks bench/data/noise_blocks.json --noise-count 50
for s in 1 2; do
  run "noise-$s" agent=replay agent.params.path=bench/data/noise_blocks.json seed=$s \
    'agent.epsilon_schedule=[[1.0,4]]' agent.batch_size=13
done
wait
python bench/bench_table.py
