"""Learning a classifier from a dataset.

Public modules:

- ``train.splits``: speaker-disjoint, deterministic train/validation/test splits.
- ``train.dataset``: clips to fixed-length windows with on-the-fly augmentation.
- ``train.models``: small keyword-spotting networks, built by name.
- ``train.loop``: the training loop; writes a self-describing run folder.
"""
