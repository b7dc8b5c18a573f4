"""The GPU kit: prove the GPU path in one call of a lent GPU machine (issue 24).

`python -m benchmarks.gpu_kit build` (here) packs what that machine lacks, compiled for its Python
3.12; `python -m benchmarks.gpu_kit run` (there) runs every GPU check in order and writes one
summary. deps.py: which wheels; strip.py: what is left out of them; build.py: the kit; checks.py:
the checks, their sizes, limits and verdicts; probe.py: the environment probe and the corpus;
runner.py: running them; smoke312.py: a torch-free Tune search that proves a kit runs under 3.12.
"""
