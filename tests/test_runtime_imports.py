"""The runtime runs where torch and librosa cannot be imported (a Raspberry Pi with requirements-pi.txt).

Each check runs in a fresh interpreter whose ``sitecustomize`` (on
``PYTHONPATH``, so the bench's own worker processes get it too) makes any
import of torch or librosa raise ``ImportError``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BLOCKED = ("torch", "librosa")

SITECUSTOMIZE = textwrap.dedent(
    f"""
    import sys

    class _Blocker:
        blocked = {BLOCKED!r}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{{name}} is blocked: the runtime must not need it")
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)


def run_blocked(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_blocker_really_blocks(tmp_path):
    r = run_blocked(tmp_path, "import torch")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_runtime_modules_import_without_torch_or_librosa(tmp_path):
    modules = ["features.mfcc", "features.config", "deploy.onnxgraph", "deploy.modelfile", "deploy.detector", "deploy.multi", "deploy.bench", "deploy.bench_worker"]
    if (REPO / "deploy" / "listener.py").is_file():
        modules.append("deploy.listener")
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules), 'a blocked module was imported'\nprint('ok')"
    r = run_blocked(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_detector_and_bench_run_without_torch_or_librosa(keyword_model, tmp_path):
    """The detector listens, and ``kws bench`` (without --against) measures, on a given WAV: the Pi route."""
    from deploy.bench import BenchStream, save_stream

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 4) * 0.01).astype(np.float32)
    wav = save_stream(BenchStream(audio, [{"phrase": "computer", "start_s": 1.0, "end_s": 1.5}], "noise"), tmp_path / "in")
    code = textwrap.dedent(
        f"""
        import json, sys
        from deploy.bench import read_wav, run_bench
        from deploy.detector import Detector
        from deploy.modelfile import KwsModel
        model = KwsModel({str(keyword_model)!r})
        assert model.optimized  # the load-time graph rewrite needs no onnx package
        det = Detector(model, record_scores=True)
        det.process(read_wav({str(wav)!r}))
        assert len(det.scores) > 10
        assert "onnx" not in sys.modules
        report = run_bench({str(keyword_model)!r}, {str(wav)!r}, out_dir={str(tmp_path / 'out')!r}, min_audio_s=0, copies=(1,))
        assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules)
        print(json.dumps({{"cpu": report["engines"][0]["cpu_s_per_hour"], "rss": report["engines"][0]["peak_rss_mib"]}}))
        """
    )
    r = run_blocked(tmp_path, code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["cpu"] > 0 and out["rss"] > 0


def test_kws_listen_command_loads_without_torch_or_librosa(tmp_path):
    """The ``kws`` command line itself (typer, then ``listen``/``devices``) is part of the Pi route."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.argv = ["kws", "listen", "--help"]
        from deploy.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules)
        """
    )
    r = run_blocked(tmp_path, code)
    assert r.returncode == 0, r.stderr
    assert "Listen on a microphone" in r.stdout
