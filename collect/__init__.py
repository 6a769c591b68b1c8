"""Making datasets: synthetic voices, the manifest, data checks (and, later, recording sessions).

Public modules:

- ``collect.manifest``: the clip row, reading a dataset (the union of its
  session manifests), appending rows safely.
- ``collect.synth``: espeak-ng voices reading the keyword, confusables and sentences.
- ``collect.phrases``: confusable negatives derived from a wake phrase, and sentences.
- ``collect.datacheck``: validate every row against its file; counts per label/accent/speaker.
"""
