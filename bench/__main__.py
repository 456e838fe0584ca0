"""`python -m bench` (make bench): run every benchmark and print its ratios."""

from bench import events_bench, trainer_bench

if __name__ == "__main__":
    events_bench.main()
    trainer_bench.main()
