"""Speed and memory benchmarks (not tests): ``make bench`` or ``python -m benchmarks [name ...]``.

Each benchmark is a module here with ``main(argv) -> int`` that writes ``benchmarks/results/<name>.json``;
large inputs are generated under ``benchmarks/scratch/`` (git-ignored) and reused by later runs.
"""
