"""Benchmarks, run from the project root as modules: `python -m bench.latency`,
`python -m bench.capacity`, `python -m bench.soak`, `python -m bench.routing`,
`python -m bench.reply_overlap`, `python -m bench.fuzz`. Results go to `bench/results/`."""
