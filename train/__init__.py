"""Learning a classifier from a dataset.

Public modules:

- ``train.config``: ``TrainConfig``, the frozen training configuration (JSON in ``configs/``).
- ``train.splits``: speaker-disjoint, deterministic train/validation/test splits.
- ``train.dataset``: clips to fixed-length windows with on-the-fly augmentation.
- ``train.models``: small keyword-spotting networks, built by name.
- ``train.metrics``: validation metrics, including keyword recall at a fixed false-accept rate.
- ``train.loop``: the training loop; writes a self-describing run folder.
- ``train.checkpoint``: the ``best.pt`` format export reads.
"""
