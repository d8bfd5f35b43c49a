"""The benchmarks: run them from the repository root as modules (``python -m bench.cpu_table``,
``python -m bench.thread_policy``, ``python -m bench.gpu_table``), so that they share
``bench/common.py`` without changing ``sys.path``."""
