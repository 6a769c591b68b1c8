"""Two or more exported models as one: their keyword probabilities averaged every hop.

Why: on the real-speech benchmark the DS-CNN and TC-ResNet, trained on the
same data, miss different real speakers (the DS-CNN the high voices and long
clips, TC-ResNet more evenly), so their mean score misses fewer than either
(benchmarks/REAL_SPEECH.md). Averaging is done inside one ONNX graph
(``deploy.onnxgraph.average_models``), so the file is a model like any other:
the detector, listener, ``kws eval`` and ``kws bench`` run it unchanged, at
the members' summed cost.

The members must agree on what the detector feeds them and what they say:
labels, MFCC settings, window and hop. The ensemble keeps the first member's
metadata (its training dataset is where the threshold is calibrated), with
the members' parameters summed, and records every member's file digest and
model under ``ensemble``. Its
threshold and smoothing are chosen anew on the validation speakers' stream
(``deploy.calibrate``): a mean of scores has its own scale.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from features.audio import sha256_file
from features.errors import ModelError

MATCHING = ("labels", "feature_config", "window_frames", "hop_frames")  # what members must share


def make_ensemble(members: list[str | Path], out: str | Path, *, calibrate: bool = True, target_fa_per_hour: float = 1.0,
                  background_minutes: float = 20.0, snr_db: float = 10.0, seed: int = 0, progress: bool = True) -> Path:
    """Write the averaged model of ``members`` to ``out``; with ``calibrate``, choose its threshold on validation data."""
    from deploy.export import update_metadata
    from deploy.modelcard import write_model_card
    from deploy.modelfile import INPUT_NAME, KwsModel
    from deploy.onnxgraph import GraphError, average_models

    members = [Path(m) for m in members]
    if len(members) < 2:
        raise ModelError("an ensemble needs at least two models")
    models = [KwsModel(m, stream=False) for m in members]
    first = models[0].info
    for m in models:
        if "stream" in m.info.metadata:  # the file would carry one member's streaming graph, which the detector would run alone
            raise ModelError(f"{m.path} is a streaming model: an ensemble averages window graphs only")
    for m in models[1:]:
        for key in MATCHING:
            if m.info.metadata.get(key) != first.metadata.get(key):
                raise ModelError(f"{m.path} and {models[0].path} differ in {key}: an ensemble's members must share "
                                 f"{', '.join(MATCHING)}")
    dataset = first.metadata.get("dataset")
    if calibrate and (not dataset or not Path(dataset).is_dir()):  # checked before anything is written
        raise ModelError(f"cannot calibrate the ensemble: {models[0].path}'s training dataset {dataset!r} is not here")
    try:
        graph = average_models([m.path.read_bytes() for m in models], INPUT_NAME)
    except GraphError as exc:
        raise ModelError(f"cannot combine {', '.join(map(str, members))}: {exc}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".ensemble-", suffix=".onnx")
    os.close(fd)
    try:
        Path(tmp).write_bytes(graph)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    record = [{"path": str(m.path), "sha256": sha256_file(m.path), "model": m.info.metadata.get("model_name"),
               "threshold": m.info.threshold} for m in models]
    n_parameters = sum(int(m.info.metadata.get("n_parameters", 0)) for m in models)  # the cost of the file, not of its first member
    update_metadata(out, {"ensemble": json.dumps(record, sort_keys=True), "n_parameters": str(n_parameters)})
    KwsModel(out)  # it opens and reads as a model, or this raises naming the file
    if calibrate:
        from deploy.calibrate import calibrate_threshold

        calibrate_threshold(out, dataset, target_fa_per_hour=target_fa_per_hour, background_minutes=background_minutes,
                            snr_db=snr_db, seed=seed, progress=progress)
    else:
        write_model_card(out)
    return out
