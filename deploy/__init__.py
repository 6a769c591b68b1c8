"""From a trained checkpoint to a listening device, and the measurements in between.

The runtime (imports only numpy, onnxruntime and sounddevice, plus the numpy
MFCC in ``features.mfcc``; a Raspberry Pi needs neither torch nor librosa):

- ``deploy.modelfile``: open an exported model and read its metadata.
- ``deploy.onnxgraph``: read and rewrite the ONNX file without the ``onnx`` package (faster
  2-D convolutions at load, several models merged into one graph).
- ``deploy.detector``: the streaming detector (chunks of any size in, detections out)
  and the trigger logic (smoothing, threshold, refractory period).
- ``deploy.listener``: the detector on a live microphone through sounddevice.
- ``deploy.multi``: several models on one MFCC front end and one merged graph.

Build-time modules (may use torch, librosa, matplotlib):

- ``deploy.export``: checkpoint to one ONNX file with metadata, checked against PyTorch.
- ``deploy.modelcard``: the Markdown card written beside the model.
- ``deploy.evaluate`` / ``deploy.report``: per-clip and per-stream evaluation, per accent.
- ``deploy.demo``: the whole pipeline on the built-in default.
- ``deploy.cli``: the ``kws`` command line.
"""
