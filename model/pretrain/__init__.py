"""Masked-language-model pretraining of a BERT or NEZHA encoder on unlabeled text, without Ray.

`pretrain(cfg, corpus, out)` (loop.py) reads the corpus (model/corpus.py: CSV files with a `text`
column, or text files with one document per line), builds the vocabulary from it (`Vocab.build`:
special tokens first), and trains with n-gram masking (model/masking.py) until the budget (`steps`,
`epochs` or `time_budget` minutes) is spent. `out` becomes a checkpoint directory the `bert` /
`nezha` encoders of model/encoders.py load: config.json, model.safetensors, vocab.txt, plus
pretrain.json (corpus hashes, steps, loss curve, timings, versions, settings).

    config.py       `PretrainConfig` (the flags), the run's fingerprint, file names; no torch
    data.py         the encoded corpus
    mlm.py          encoders with their MLM heads, by --arch
    checkpoints.py  where checkpoints live, and which --out directories a run may use
    loop.py         the per-worker loop (`run_loop`) and `pretrain`

The step, batching, device and provenance helpers are fine-tuning's (model/train.py,
model/inference.py, model/provenance.py). This package never imports Ray: data-parallel pretraining
with Ray Train is search/pretrain_distributed.py.
"""
