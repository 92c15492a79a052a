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
# Collected so far (2026-11-28, frozen: written before the config moved the optimizer to
# model/, so this version refuses to resume them; bench_table.py reads them as they are):
# random-0 (random search, seed 0), qlearning-100 and -101 (Q-learning, 20 iterations of 16),
# noise-1 and noise-2 (the first 50 blocks of random-0 again under seeds 1 and 2).
# Continued with this version: more random search, and Q-learning with the short-budget
# settings, then the table.
run random-1 seed=1 'agent.epsilon_schedule=[[1.0,40]]' &
run qlearning-102 agent=qlearning seed=102 'agent.epsilon_schedule=[[1.0,6],[0.7,4],[0.4,4],[0.1,6]]'
run qlearning-103 agent=qlearning seed=103 'agent.epsilon_schedule=[[1.0,6],[0.7,4],[0.4,4],[0.1,6]]'
wait
python bench/bench_table.py
