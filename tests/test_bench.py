"""``kws bench``: every field present, with sane values, on a short generated stream. Never a timing threshold."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deploy.bench import (
    BenchStream,
    builtin_stream,
    detection_latency,
    interleaved_rounds,
    load_stream,
    median_round,
    mfcc_macs_per_frame,
    round_ratio,
    run_bench,
    save_stream,
)
from deploy.macs import count_macs
from features.config import FeatureConfig
from features.errors import AudioError, ConfigError, KwsError, ModelError

ENGINE_FIELDS = [
    "cpu_s_per_hour", "rtf", "chunk_latency_ms", "hop_latency_ms", "peak_rss_mib", "size_bytes", "parameters",
    "macs_per_s", "detection", "load_wall_s", "audio_s", "cpu_vs_kws", "rss_vs_kws", "rss_anon_mib", "rss_file_mib",
]


@pytest.fixture(scope="module")
def short_stream() -> BenchStream:
    return builtin_stream(["computer", "hey jarvis"], takes_per_phrase=2, n_sentences=2, seed=3)


@pytest.fixture(scope="module")
def report(keyword_model, short_stream, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    return run_bench(keyword_model, out_dir=out, min_audio_s=0, copies=(1, 2), stream=short_stream, rounds=2) | {"_out": out}


def test_stream_knows_its_keywords(short_stream, tmp_path):
    assert [e["phrase"] for e in short_stream.events].count("computer") == 2
    for e in short_stream.events:
        assert 0 < e["start_s"] < e["end_s"] < short_stream.duration_s
        seg = short_stream.audio[int(e["start_s"] * 16000) : int(e["end_s"] * 16000)]
        assert np.abs(seg).max() > 0.01  # speech is where the event says
    wav = save_stream(short_stream, tmp_path)
    back = load_stream(wav)
    assert back.events == short_stream.events
    assert np.abs(back.audio - short_stream.audio).max() < 1e-4
    longer = short_stream.repeated(3 * short_stream.duration_s)
    assert len(longer.events) == 3 * len(short_stream.events)


def test_report_has_every_field_with_sane_values(report, short_stream, keyword_model):
    from deploy.modelfile import KwsModel

    hop_s = KwsModel(keyword_model).info.hop_s
    ours = report["engines"][0]
    for field in ENGINE_FIELDS:
        assert field in ours, field
    assert ours["audio_s"] == pytest.approx(short_stream.duration_s, abs=0.2)
    assert ours["cpu_s_per_hour"] > 0
    assert 0 < ours["rtf"] < 50
    lat = ours["chunk_latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert lat["n"] == int(np.ceil(short_stream.duration_s * 16000 / 1600))
    assert ours["hop_latency_ms"]["n"] > 0
    assert ours["hops"] == pytest.approx(short_stream.duration_s / hop_s, abs=2)
    assert 10 < ours["peak_rss_mib"] < 2000
    # What is resident at the end (private + file pages) cannot exceed the peak; both parts exist.
    assert ours["rss_anon_mib"] > 1 and ours["rss_file_mib"] > 1
    assert ours["rss_anon_mib"] + ours["rss_file_mib"] <= ours["vm_hwm_kib"] / 1024 + 0.5
    assert ours["size_bytes"] > 1000
    assert ours["parameters"] > 1000
    assert ours["model_macs_per_s"] > 0 and ours["feature_macs_per_s"] > 0
    det = ours["detection"][0]
    assert det["phrase"] == "computer" and det["keywords"] == 2
    assert 0 <= det["detected"] <= 2
    if det["detected"]:
        assert -1500 < det["median_ms"] < 2000
    assert [m["models"] for m in report["multi"]] == [1, 2]
    assert report["multi"][1]["cpu_s_per_hour"] > 0
    # Two rounds: each figure is one of its rounds', each ratio within its per-round range.
    assert report["rounds"] == 2 and len(ours["cpu_s_per_hour_rounds"]) == 2
    assert ours["cpu_s_per_hour"] in ours["cpu_s_per_hour_rounds"] and ours["cpu_vs_kws"] == 1.0
    two = report["multi"][1]
    assert len(two["cpu_s_per_hour_rounds"]) == 2 and two["vs_one_range"][0] <= two["vs_one"] <= two["vs_one_range"][1]
    assert 0 < report["pi4"]["expected_core_share"][0] <= report["pi4"]["expected_core_share"][1]
    assert set(report["targets"]) >= {"cpu_at_most_quarter_of_openwakeword", "median_detection_latency_under_300ms"}


def test_report_files(report):
    out = report["_out"]
    data = json.loads((out / "bench.json").read_text())
    assert data["engines"][0]["label"].startswith("kws")
    md = (out / "bench.md").read_text()
    assert "| engine |" in md and "Raspberry Pi 4" in md and "kws (" in md


def test_macs_counted_from_the_graph(keyword_model):
    """The DS-CNN's MACs, counted by hand from its shapes, equal the graph count."""
    from deploy.modelfile import KwsModel

    info = KwsModel(keyword_model).info
    args = json.loads(json.dumps(info.metadata["model_args"]))
    c, n_mfcc, frames = args.get("channels", 64), args["n_mfcc"], info.window_frames
    blocks, kernel, labels = args.get("n_blocks", 4), args.get("kernel", 9), args["n_labels"]
    t = (frames + 2 * 2 - 5) // 2 + 1  # stem: kernel 5, stride 2, padding 2
    expected = t * c * n_mfcc * 5 + blocks * (t * c * kernel + t * c * c) + c * labels
    got = count_macs(keyword_model, {"mfcc": [1, frames, n_mfcc]})
    assert got.unresolved == []
    assert got.total == expected
    assert count_macs(keyword_model, {"mfcc": [3, frames, n_mfcc]}).total == 3 * expected
    assert mfcc_macs_per_frame(FeatureConfig()) > 512


def test_rounds_interleave_and_keep_the_median():
    """Every job once per round in the same order; the median round per job; ratios taken round by round."""
    calls = []
    cpu = {"kws": iter([5.0, 9.0, 6.0]), "other": iter([50.0, 90.0, 30.0])}

    def job(key):
        def run():
            calls.append(key)
            return {"cpu_s_per_hour": next(cpu[key]), "round": len(calls)}
        return run

    runs = interleaved_rounds({"kws": job("kws"), "other": job("other")}, 3)
    assert calls == ["kws", "other"] * 3
    assert median_round(runs["kws"]) == {"cpu_s_per_hour": 6.0, "round": 5, "cpu_s_per_hour_rounds": [5.0, 9.0, 6.0]}
    assert median_round(runs["kws"][:2])["cpu_s_per_hour"] == 5.0  # an even count keeps the lower middle round
    ratio, spread = round_ratio(runs["other"], runs["kws"])
    assert ratio == pytest.approx(10.0) and spread == pytest.approx([5.0, 10.0])  # 10, 10, 5: not 50/6
    assert round_ratio(runs["other"], [{"cpu_s_per_hour": 0.0}] * 3) == (None, None)


def test_detection_latency_matching():
    events = [{"phrase": "computer", "start_s": 1.0, "end_s": 1.5}, {"phrase": "computer", "start_s": 5.0, "end_s": 5.6},
              {"phrase": "hey jarvis", "start_s": 8.0, "end_s": 8.7}]
    dets = [{"time_s": 1.7}, {"time_s": 3.9}, {"time_s": 5.8}, {"time_s": 5.9}]
    r = detection_latency(dets, events, "computer")
    assert (r["keywords"], r["detected"], r["false_accepts"]) == (2, 2, 2)
    assert r["median_ms"] == pytest.approx(200)


def test_cli_bench_and_bad_input(keyword_model, short_stream, tmp_path):
    from deploy.cli.app import app
    import deploy.cli.bench  # noqa: F401  (registers the command)

    wav = save_stream(short_stream, tmp_path / "s")
    r = CliRunner().invoke(app, ["bench", str(keyword_model), str(wav), "--out", str(tmp_path / "o"), "--min-audio", "0", "--copies", "1",
                                 "--rounds", "1"])
    assert r.exit_code == 0, r.output
    assert "| kws (" in r.output and (tmp_path / "o" / "bench.json").is_file()
    with pytest.raises(ConfigError, match="unknown --against"):
        run_bench(keyword_model, wav, against=["snowboy"], out_dir=tmp_path / "x", min_audio_s=0)
    with pytest.raises(ConfigError, match="rounds must be at least 1"):
        run_bench(keyword_model, wav, out_dir=tmp_path / "x", min_audio_s=0, rounds=0)
    with pytest.raises(ModelError):
        run_bench(wav, wav, out_dir=tmp_path / "x", min_audio_s=0)
    with pytest.raises(AudioError, match="not found"):
        run_bench(keyword_model, tmp_path / "missing.wav", out_dir=tmp_path / "x", min_audio_s=0)
    assert issubclass(ConfigError, KwsError)


def test_machine_info_names_the_cpu_and_the_installed_package_versions():
    from importlib.metadata import version
    from pathlib import Path

    from deploy.bench import machine_info

    info = machine_info(packages=True)
    assert info["cpu"] and info["cores"] >= 1
    if Path("/proc/cpuinfo").is_file():  # Linux: the vector instructions the kernels are chosen by
        assert info["cpu_id"]["family"] and any(f.startswith(("sse", "avx")) for f in info["cpu_id"]["simd"])
    assert info["packages"]["numpy"] == version("numpy") and info["packages"]["onnxruntime"] == version("onnxruntime")
    assert "packages" not in machine_info()
