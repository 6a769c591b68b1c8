"""The real-speech benchmark's plumbing, on a tiny fake wake-word folder (runs everywhere), and a layout check of the real one.

No training happens here: the full benchmark takes minutes (benchmarks/REAL_SPEECH.md).
What is tested is what would silently corrupt its figures: rotations that
let training negatives leak into the test background, real keyword clips
reaching the training dataset, and the keyword in the background text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from collect.manifest import NEGATIVE, read_dataset
from deploy.benchmark_real import (KEYWORD, OTHER_WORDS, REPORT_TARGETS, ROTATIONS, BenchConfig, background_sentences, check_wake_words,
                                   load_real_clips, rotation_dataset)
from features.errors import ConfigError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "wake-words"


def _fake_folder(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for word in (KEYWORD, *OTHER_WORDS):
        (root / word).mkdir(parents=True)
        for i in range(n):
            t = np.arange(8000) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(len(t))
            name = f"{hashlib.sha256(f'{word}{i}'.encode()).hexdigest()[:8]}-{word}"  # uuid-like, as in the real folders
            sf.write(root / word / f"{name}.flac", audio.astype(np.float32), 16000)
    return root


def _wake_words_from(tiny_dataset: Path, ww: Path, stretch=None) -> Path:
    """A wake-word folder of the tiny dataset's speech: 8 "computer" takes (the first 3 through ``stretch``), 2 clips per other word."""
    from features.audio import load_audio

    rows, _ = read_dataset(tiny_dataset)
    said = [r for r in rows if r.label == KEYWORD][:8]
    other = [r for r in rows if r.label == NEGATIVE and r.kind != "noise"][:8]
    for word in (KEYWORD, *OTHER_WORDS):
        (ww / word).mkdir(parents=True)
    for i, r in enumerate(said):
        audio = load_audio(tiny_dataset / r.path)
        if i < 3 and stretch:  # drawn out past LONG_S
            audio = stretch(audio)
        sf.write(ww / KEYWORD / f"{i:08x}-computer.flac", audio, 16000)
    for i, r in enumerate(other):
        sf.write(ww / OTHER_WORDS[i % 4] / f"{i:08x}-other.flac", load_audio(tiny_dataset / r.path), 16000)
    return ww


def _read_aloud_from(tiny_dataset: Path, read: Path) -> Path:
    """A read-aloud background folder: the tiny dataset's sessions without their keyword takes (audio linked, not copied)."""
    for manifest in tiny_dataset.glob("*/manifest.jsonl"):
        (read / manifest.parent.name).mkdir(parents=True)
        for sub in manifest.parent.iterdir():
            if sub.is_dir():
                (read / manifest.parent.name / sub.name).symlink_to(sub)
        lines = [ln for ln in manifest.read_text().splitlines() if json.loads(ln)["label"] != KEYWORD]
        (read / manifest.parent.name / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return read


def test_rotations_keep_training_negatives_out_of_the_test_background():
    for train_words, test_words in ROTATIONS.values():
        assert not set(train_words) & set(test_words)
        assert KEYWORD not in train_words + test_words
        assert set(train_words) | set(test_words) == set(OTHER_WORDS)


def test_rotation_dataset_has_only_other_words_as_real_negatives(tmp_path):
    folder = _fake_folder(tmp_path / "ww")
    files = check_wake_words(folder)
    synth = tmp_path / "synth"
    (synth / "synth-espeak").mkdir(parents=True)
    (synth / "synth-espeak" / "manifest.jsonl").write_text("")
    ds = rotation_dataset(tmp_path / "ds", synth, files, ROTATIONS["A"][0])
    rows, bad = read_dataset(ds)
    assert not bad and len(rows) == 2 * 3
    assert {r.label for r in rows} == {NEGATIVE}
    assert {r.path.split("/")[1] for r in rows} == set(ROTATIONS["A"][0])
    assert all((ds / r.path).is_file() for r in rows)  # readable through the links
    assert len({r.speaker for r in rows}) == len(rows)  # one pseudo-speaker per clip: no speaker ids exist


def test_real_clips_load_with_keyword_truth(tmp_path):
    files = check_wake_words(_fake_folder(tmp_path / "ww"))
    kw = load_real_clips(files[KEYWORD], KEYWORD)
    neg = load_real_clips(files["jarvis"], "jarvis")
    assert [c.truth for c in kw] == [1, 1, 1] and [c.truth for c in neg] == [0, 0, 0]
    assert kw[0].row.label == KEYWORD and neg[0].row.label == NEGATIVE


def test_missing_word_folder_is_a_clear_error(tmp_path):
    folder = _fake_folder(tmp_path / "ww")
    for f in (folder / "snowboy").iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match="snowboy"):
        check_wake_words(folder)


def test_background_text_never_says_the_keyword():
    lines = background_sentences()
    assert len(lines) >= 50
    assert not any(KEYWORD in s.lower() for s in lines)


def test_bench_config_files_parse():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("bench-real*.json")):
        cfg = BenchConfig.from_file(path)
        cfg.train_config_obj()  # the training config it names is valid too
    with pytest.raises(ConfigError, match="unknown key"):
        BenchConfig.from_dict({"nme": "typo"})
    for rounds in (0, 1.5, "2"):
        with pytest.raises(ConfigError, match="mining.rounds"):
            BenchConfig.from_dict({"mining": {"rounds": rounds}})
    assert BenchConfig.from_dict({"mining": {"rounds": 1}}).mining["noise_snr_db"] is None  # clean mining unless asked
    assert BenchConfig.from_dict({"mining": {"noise_snr_db": 10}}).mining["noise_snr_db"] == 10
    for snr in ("10", True, 100):
        with pytest.raises(ConfigError, match="mining.noise_snr_db"):
            BenchConfig.from_dict({"mining": {"noise_snr_db": snr}})
    assert BenchConfig.from_dict({"mining": {"rounds": 1}}).mining["read_aloud_text"] == "sentences"
    with pytest.raises(ConfigError, match="mining.read_aloud_text must be one of sentences, sentences\\+words"):
        BenchConfig.from_dict({"mining": {"read_aloud_text": "words"}})
    for bad in ({"kokoro": {"n_voices_per_accent": 4}}, {"espeak": {"n_voices": 4}}, {"espeak": 4}):  # not an engine; not a synth key
        with pytest.raises(ConfigError, match="engine_synth"):
            BenchConfig.from_dict({"engines": ["espeak"], "engine_synth": bad})
    assert BenchConfig.from_dict({"mining": {"rounds": 1}}).mining["fine_tuned_share"] == 1.0  # the fine-tuned model as it is
    for share in (0, 1.2, "0.5"):
        with pytest.raises(ConfigError, match="mining.fine_tuned_share"):
            BenchConfig.from_dict({"mining": {"fine_tuned_share": share}})
    assert BenchConfig.from_dict({"adapt_norm": {"blend": 0.75}}).adapt_norm == {"blend": 0.75, "hop_frames": 10}
    assert BenchConfig.from_dict({}).adapt_norm == {}  # off unless asked
    for bad in ({"blend": 0}, {"blend": 1.5}, {"blend": True}):
        with pytest.raises(ConfigError, match="adapt_norm.blend"):
            BenchConfig.from_dict({"adapt_norm": bad})
    with pytest.raises(ConfigError, match="unknown adapt_norm key"):
        BenchConfig.from_dict({"adapt_norm": {"blnd": 0.5}})


def test_train_overrides_change_only_the_settings_they_name():
    base = BenchConfig.from_dict({"train_config": "room-mic-warp.json"}).train_config_obj()
    lever = BenchConfig.from_dict({"train_config": "room-mic-warp.json",
                                   "train_overrides": {"augment.max_warp": 0.2, "features.fmax": 4000.0, "epochs": 5}})
    cfg = lever.train_config_obj()
    assert (cfg.augment.max_warp, cfg.features, cfg.epochs) == (0.2, {"fmax": 4000.0}, 5)
    assert cfg.augment.p_warp == base.augment.p_warp and cfg.augment.p_room == base.augment.p_room  # the rest of the group kept
    assert cfg.replace(augment=base.augment, features={}, epochs=base.epochs).to_dict() == base.to_dict()
    for bad, words in (({"augment.p_nois": 0.1}, "p_nois"), ({"lr.x": 1}, "'lr' is not a group"), ({"epoch": 3}, "epoch")):
        with pytest.raises(ConfigError, match="train_overrides") as err:
            BenchConfig.from_dict({"name": "x", "train_overrides": bad}).train_config_obj()
        assert words in str(err.value)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real wake-word data not present at {REAL}")
def test_real_folder_layout():
    files = check_wake_words(REAL)
    assert len(files[KEYWORD]) >= 300
    assert sf.info(str(files[KEYWORD][0])).samplerate == 16000


def test_piper_recipe_changes_only_the_piper_cache(tmp_path, monkeypatch):
    """A Piper session made with one recipe is never reused for another (it would silently train on the wrong voices);
    espeak-ng sessions, which the recipe does not touch, are shared."""
    import collect.synth
    from deploy.benchmark_real import heldout_keywords, training_synth

    made = []

    def fake_synthesize(folder, **kw):
        made.append((Path(folder).name, kw.get("piper_voices")))
        (Path(folder) / collect.synth.SESSIONS[kw["engine"]]).mkdir(parents=True)

    monkeypatch.setattr(collect.synth, "synthesize_dataset", fake_synthesize)
    base = BenchConfig.from_file(Path(__file__).resolve().parents[1] / "configs" / "bench-real-voices-mined.json")
    warp = BenchConfig(**{**base.__dict__, "synth": {**base.synth, "piper_voices": "warp"}})
    folders = {name: (training_synth(tmp_path, cfg, False), heldout_keywords(tmp_path, cfg, False))
               for name, cfg in (("gender", base), ("warp", warp))}
    assert folders["gender"][0] != folders["warp"][0] and folders["gender"][1] != folders["warp"][1]
    espeak = [name for name, _ in made if name.split("-")[1] == "espeak"]
    assert len(espeak) == 2, made  # training and held-out, once each, shared by both recipes
    piper = {name: voices for name, voices in made if name.split("-")[1] == "piper"}
    assert len(piper) == 4 and sorted(piper.values()) == ["gender", "gender", "warp", "warp"]
    for name in ("gender", "warp"):  # each combined folder links its own recipe's session
        link = (folders[name][0] / collect.synth.SESSIONS["piper"]).resolve().parent.name
        assert piper[link] == name


def test_random_word_sentences_are_a_session_beside_the_unchanged_training_session(tmp_path):
    """``synth.n_word_sentences`` adds a ``synth-<engine>-words`` session of the same voices; the engine's main
    session keeps its cache folder, so a recipe with them synthesises only the new sentences."""
    from collect.synth import SESSIONS
    from deploy.benchmark_real import training_synth

    small = {"n_voices_per_accent": 1, "takes_per_voice": 1, "n_confusables": 0, "n_sentences": 1, "seed": 0}
    without = training_synth(tmp_path, BenchConfig.from_dict({"synth": small}), False)
    with_words = training_synth(tmp_path, BenchConfig.from_dict({"synth": {**small, "n_word_sentences": 2}}), False)
    assert with_words != without
    main = SESSIONS["espeak"]
    assert sorted(p.name for p in with_words.iterdir()) == [main, f"{main}-words"]
    assert (with_words / main).resolve() == (without / main).resolve()
    rows, _ = read_dataset(with_words)
    words = [r for r in rows if r.session == f"{main}-words"]
    assert len(words) == 2 * len({r.speaker for r in words}) >= 16  # two per voice, a voice per accent
    assert {r.speaker for r in words} == {r.speaker for r in rows if r.session == main and r.kind == "keyword"}
    assert all(r.kind == "sentence" and r.label != KEYWORD and KEYWORD not in r.text.lower() for r in words)


def test_training_read_aloud_with_random_words_reads_them_in_its_own_cache_folder(tmp_path):
    """"sentences+words" has the training voices read random-word sentences too, into another cache folder than the shipped text."""
    from collect import phrases
    from deploy.benchmark_real import read_aloud

    def texts(folder: Path) -> list[str]:
        return [r.text for r in read_dataset(folder)[0]]

    shipped = set(phrases.sentence_pool(KEYWORD))
    made = {}
    for text in ("sentences", "sentences+words"):
        cfg = BenchConfig.from_dict({"synth": {"n_voices_per_accent": 1}, "read_aloud_sentences": [3, 3],
                                     "mining": {"read_aloud_takes": 1, "read_aloud_text": text}})
        made[text] = read_aloud(tmp_path, cfg, False, training_side=True)
    assert made["sentences"] != made["sentences+words"]
    plain, mixed = texts(made["sentences"]), texts(made["sentences+words"])
    assert len(plain) == len(mixed) >= 8  # one take per voice, a voice per accent

    def beyond_shipped(text: str) -> str:  # what is left of a take's text once its shipped sentences are taken out
        for sentence in shipped:
            text = text.replace(sentence, "")
        return text.strip()

    assert not any(beyond_shipped(t) for t in plain)
    assert sum(bool(beyond_shipped(t)) for t in mixed) > len(mixed) // 2  # 1000 random-word sentences against ~110 shipped
    assert KEYWORD not in [w.strip(".").lower() for t in mixed for w in t.split()]


def test_voice_bands_of_a_saved_test_stream(tmp_path, keyword_model):
    """The benchmark's FRR by pitch and SNR band, replayed from saved scores: the one keyword the scores fire on is the one hit;
    a clip recorded 20 dB quieter than the others meets the stream's noise at a lower SNR than its nominal 10 dB."""
    from deploy.benchmark_real import keyword_traits, saved_test_run, voice_frr_at
    from deploy.modelfile import KwsModel
    from deploy.streams import Event
    from deploy.voice_bands import pitch_band

    info = KwsModel(keyword_model).info
    files = check_wake_words(_fake_folder(tmp_path / "ww"))
    clips = load_real_clips(files[KEYWORD], KEYWORD)  # tones at 200, 250 and 300 Hz, all at one level
    clips[0] = dataclasses.replace(clips[0], audio=0.1 * clips[0].audio)
    events = [Event(1.0 + 4 * i, 1.5 + 4 * i, KEYWORD, path=c.row.path) for i, c in enumerate(clips)]
    times = np.arange(0, 14, info.hop_s)
    scores = np.where((times > 5.2) & (times < 5.8), 0.99, 0.01)[:, None].astype(np.float32)  # only the second keyword
    rot = tmp_path / "rotation-A"
    rot.mkdir()
    np.savez_compressed(rot / "test_scores.npz", times=times, scores=scores, duration_s=14.0)
    (rot / "test_events.json").write_text(json.dumps([e.to_dict() for e in events]))
    run = saved_test_run(rot)
    assert run.duration_s == 14.0 and [e.path for e in run.events] == [c.row.path for c in clips]
    measured = keyword_traits(clips, 10.0)
    # the mean power is (0.01 + 1 + 1) / 3 of a loud clip's: loud clips at 10 + 1.74 dB, the quiet one 20 dB below them
    assert [measured[c.row.path]["snr_db"] for c in clips] == pytest.approx([-8.26, 11.74, 11.74], abs=0.05)
    voices = voice_frr_at(run, info, measured, {"at 0.5": 0.5, "unset": None})
    assert set(voices) == {"at 0.5"}
    bands = [pitch_band(measured[c.row.path]["pitch_hz"]) for c in clips]
    assert sorted(bands) == ["165-220 Hz", "220 Hz and over", "220 Hz and over"]
    expected: dict = {}
    for i, band in enumerate(bands):
        n, misses = expected.get(band, (0, 0))
        expected[band] = (n + 1, misses + (i != 1))
    assert {b: (t["n"], t["misses"]) for b, t in voices["at 0.5"]["pitch"].items()} == expected
    assert sum(t["n"] for t in voices["at 0.5"]["length"].values()) == 3
    assert {b: (t["n"], t["misses"]) for b, t in voices["at 0.5"]["snr"].items()} == {"under 0 dB": (1, 1), "10-15 dB": (2, 1)}


def test_high_band_share():
    from deploy.clip_probe import high_band_share

    t = np.arange(16000) / 16000
    assert high_band_share(np.sin(2 * np.pi * 1000 * t), 16000) < 1e-6
    assert high_band_share(np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t), 16000) == pytest.approx(0.5, abs=1e-3)
    assert high_band_share(np.zeros(100), 16000) == 0.0


def test_under_stream_noise_sets_the_streams_noise_level_and_equal_levels():
    """The noise sits snr_db below the clips' mean trimmed power; at equal level every clip has that mean power; raised as a
    mixture, each clip is the as-recorded mixture times the gain that brings the clip to the mean power."""
    from deploy.clip_probe import NOISE_PAD_S, under_stream_noise
    from deploy.streams import speech_power, trim_silence

    rng = np.random.default_rng(3)
    loud = (0.3 * rng.standard_normal(8000)).astype(np.float32)
    quiet = (0.03 * rng.standard_normal(8000)).astype(np.float32)  # 20 dB below
    mean = (0.3 ** 2 + 0.03 ** 2) / 2
    pad = int(NOISE_PAD_S * 16000)
    for equal in (False, True):
        out = under_stream_noise([loud, quiet], 10.0, 16000, level="at equal level" if equal else "as recorded")
        assert [len(x) for x in out] == [8000 + 2 * pad] * 2
        for x in out:
            assert np.mean(x[:pad] ** 2) == pytest.approx(mean / 10, rel=0.1)  # the bed, 10 dB below the mean power
        clip_power = [np.mean(x[pad:-pad] ** 2) - mean / 10 for x in out]
        if equal:
            assert clip_power == pytest.approx([mean, mean], rel=0.1)
        else:
            assert clip_power == pytest.approx([0.3 ** 2, 0.03 ** 2], rel=0.1)
    again = under_stream_noise([loud, quiet], 10.0, 16000)
    first = under_stream_noise([loud, quiet], 10.0, 16000)
    assert all(np.array_equal(a, b) for a, b in zip(again, first))  # the same noise each time
    raised = under_stream_noise([loud, quiet], 10.0, 16000, level="mixture at equal level")
    trimmed = [trim_silence(c) for c in (loud, quiet)]
    gains = [np.sqrt(speech_power(trimmed) / speech_power([t])) for t in trimmed]
    unclipped = [np.abs(f) < 1 for f in first]  # the loud clip's few peaks over full scale were clipped as recorded
    assert all(np.allclose(r[u], np.clip(f[u] * g, -1, 1), atol=1e-3 * g) for r, f, g, u in zip(raised, first, gains, unclipped))
    assert gains[1] > 5  # the quiet clip, noise and all, was raised by the gain that brings it to the mean power
    with pytest.raises(ValueError, match="level must be one of"):
        under_stream_noise([loud], 10.0, 16000, level="louder")


def test_clip_probe_of_a_finished_run(tmp_path, tiny_dataset, keyword_model):
    """The per-clip checks on a run folder: recalls follow the clips' own peak scores; long clips are found and compressed."""
    import librosa

    from collections import Counter

    from deploy.benchmark_real import ensemble_benchmark
    from deploy.clip_probe import LONG_S, paused_at_dips, probe_run, under_stream_noise
    from deploy.error_clips import keyword_snr
    from deploy.voice_bands import snr_band
    from deploy.evaluate import EvalClip, clip_pass
    from deploy.modelfile import KwsModel
    from deploy.voice_bands import spoken_seconds

    ww = _wake_words_from(tiny_dataset, tmp_path / "ww", stretch=lambda a: librosa.effects.time_stretch(a, rate=0.5))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no report.json; --clip-probe needs"):
        probe_run(out, ww, progress=False)
    with pytest.raises(ConfigError, match="no report.json; --ensemble needs"):
        ensemble_benchmark(ww, [out, tmp_path / "other"], tmp_path / "both", progress=False)
    (out / "rotation-A").mkdir(parents=True)
    (out / "rotation-A" / "model.onnx").write_bytes(Path(keyword_model).read_bytes())
    report = {"rotations": [{"rotation": "A", "calibration": {"threshold": 0.8},
                             "test": {"operating_points": [{"target_fa_per_hour": 0.5, "threshold": 0.5}]}}]}
    (out / "report.json").write_text(json.dumps(report))
    probe = probe_run(out, ww, progress=False)["A"]

    keywords = load_real_clips(check_wake_words(ww)[KEYWORD], KEYWORD)
    peaks = np.array([r["max_score"] for r in clip_pass(KwsModel(keyword_model), keywords, progress=False)])
    assert 0 < peaks.max() and peaks.std() > 0  # the checks see varied scores
    assert probe["threshold"] == 0.5 and probe["threshold_from"] == "test stream, 0.5 FA/h"
    assert probe["recall_at_threshold"] == pytest.approx(np.mean(peaks >= 0.5), abs=1e-4)
    assert probe["n_keyword_clips"] == 8 and probe["n_negative_clips"] == 4  # snowboy + view_glass: rotation A's test side
    long = [i for i, c in enumerate(keywords) if spoken_seconds(c.audio, 16000) >= LONG_S]
    assert probe["long_clips"]["n"] == len(long) >= 3
    assert probe["long_clips"]["recall_at_threshold"]["as recorded"] == pytest.approx(np.mean(peaks[long] >= 0.5), abs=1e-4)
    assert set(probe["long_clips"]["recall_at_threshold"]) == {"as recorded", "compressed x1.25", "compressed x1.5"}
    compressed = [EvalClip(keywords[i].row, librosa.effects.time_stretch(keywords[i].audio, rate=1.5), 1) for i in long]
    compressed_peaks = np.array([r["max_score"] for r in clip_pass(KwsModel(keyword_model), compressed, progress=False)])
    assert probe["long_clips"]["recall_at_threshold"]["compressed x1.5"] == pytest.approx(np.mean(compressed_peaks >= 0.5), abs=1e-4)
    negatives = [c for w in ROTATIONS["A"][1] for c in load_real_clips(check_wake_words(ww)[w], w)]
    neg_peaks = np.array([r["max_score"] for r in clip_pass(KwsModel(keyword_model), negatives, progress=False)])
    assert probe["threshold_1pct_negatives"] == pytest.approx(np.quantile(neg_peaks, 0.99), abs=1e-4)
    detected = [i for i in range(len(keywords)) if peaks[i] >= 0.5]
    pauses = probe["paused_detected_clips"]
    assert pauses["n"] == len(detected) >= 1
    assert set(pauses["recall_at_threshold"]) == {"pauses of 0.06 s", "pauses of 0.12 s", "pauses of 0.2 s"}
    paused = [paused_at_dips(keywords[i].audio, 16000, 0.2) for i in detected]
    assert all(len(p) - len(keywords[i].audio) in (0, 3200, 6400) for p, i in zip(paused, detected))
    assert any(len(p) - len(keywords[i].audio) == 6400 for p, i in zip(paused, detected))  # two dips, 0.2 s each
    paused_peaks = np.array([r["max_score"] for r in clip_pass(KwsModel(keyword_model), [
        EvalClip(keywords[i].row, a, 1) for i, a in zip(detected, paused)], progress=False)])
    assert pauses["recall_at_threshold"]["pauses of 0.2 s"] == pytest.approx(np.mean(paused_peaks >= 0.5), abs=1e-4)
    noise = probe["in_stream_noise"]
    assert noise["snr_db"] == 10.0 and noise["noise"] == "pink"  # the benchmark's default: the report holds no config
    by_band = noise["recall_by_own_snr"]
    own = keyword_snr(keywords, 10.0)
    assert {b: t["n"] for b, t in by_band.items() if b != "all"} == dict(Counter(snr_band(v) for v in own.values()))
    assert by_band["all"]["n"] == 8
    for key in ("as recorded", "at equal level", "mixture at equal level"):
        noisy = under_stream_noise([c.audio for c in keywords], 10.0, 16000, level=key)
        noisy_peaks = np.array([r["max_score"] for r in clip_pass(KwsModel(keyword_model), [
            EvalClip(c.row, a, 1) for c, a in zip(keywords, noisy)], progress=False)])
        assert by_band["all"][key] == pytest.approx(np.mean(noisy_peaks >= 0.5), abs=1e-4)
    md = (out / "clip_probe.md").read_text()
    assert "rotation A" in md and f"{probe['median_peak']}" in md and "pauses of 0.2 s: still detected" in md
    assert "10 dB, all clips: recall as recorded / at equal level / mixture at equal level" in md


def test_real_negatives_setting_is_checked():
    assert BenchConfig.from_dict({"real_negatives": "validation"}).trains_on_real is False
    assert BenchConfig.from_dict({"real_negatives": False}).trains_on_real is False
    assert BenchConfig().trains_on_real is True
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="real_negatives must be"):
            BenchConfig.from_dict({"real_negatives": bad})


def test_accent_frr_splits_each_accent_by_engine(keyword_model):
    """Per accent and engine: the one keyword the scores fire on (en-x-es, espeak-ng) is the only hit of its cell, and the
    report's table shows misses / keywords per cell and each engine's FRR."""
    from deploy.benchmark_real import accent_frr, engine_of
    from deploy.benchmark_report import _accent_engine_table
    from deploy.evaluate import StreamRun
    from deploy.modelfile import KwsModel
    from deploy.streams import Event

    info = KwsModel(keyword_model).info
    cells = [("en-US", "synth-espeak"), ("en-US", "synth-festival"), ("en-x-es", "synth-espeak"), ("en-x-es", "synth-festival")]
    events = [Event(1.0 + 4 * i, 1.5 + 4 * i, KEYWORD, accent=a, path=f"heldout-1/{s}/{a}/take-{i}.wav") for i, (a, s) in enumerate(cells)]
    times = np.arange(0, 18, info.hop_s)
    scores = np.where((times > 9.2) & (times < 9.8), 0.99, 0.01)[:, None].astype(np.float32)  # only the third keyword
    run = StreamRun(events, 18.0, times, scores, [], 0.0)
    (a,) = accent_frr(run, info, {"at 0.5": 0.5}).values()
    assert {acc: t["misses"] for acc, t in a["per_accent"].items()} == {"en-US": 2, "en-x-es": 1}
    assert {g: (t["n"], t["misses"]) for g, t in a["per_engine"].items()} == {"espeak": (2, 1), "festival": (2, 2)}
    assert {acc: {g: t["misses"] for g, t in by.items()} for acc, by in a["per_accent_engine"].items()} == \
        {"en-US": {"espeak": 1, "festival": 1}, "en-x-es": {"espeak": 0, "festival": 1}}
    table = "\n".join(_accent_engine_table(a))
    assert "| accent | espeak | festival |" in table and "| en-x-es | 0/1 | 1/1 |" in table and "| all accents | 50.0% | 100.0% |" in table
    assert _accent_engine_table({**a, "per_engine": {"espeak": a["per_engine"]["espeak"]}}) == []  # one engine: no split
    assert engine_of("heldout-2/synth-kokoro/en-GB/x.wav") == "kokoro" and engine_of("computer/x.flac") == "other"


def test_rotation_of_a_shared_training_calibrates_on_its_training_side_real_speech(tmp_path, tiny_dataset, tiny_run):
    """real_negatives "validation": the rotation uses the one shared model, and its training-side real clips join calibration only.

    Then the ensemble measurement of that finished run with a copy of itself (one rotation's streams cost seconds here).
    """
    from dataclasses import asdict

    from deploy.benchmark_real import run_rotation

    ww = _wake_words_from(tiny_dataset, tmp_path / "ww")
    read = _read_aloud_from(tiny_dataset, tmp_path / "read")
    cfg = BenchConfig.from_dict({"real_negatives": "validation", "calibration": {"background_minutes": 2.0, "target_fa_per_hour": 2.0},
                                 "test_background_minutes": 2.0, "accent_background_minutes": 1.0})
    # The same takes stand in for the training-side read-aloud: its validation speakers' takes join calibration.
    data = {"synth": str(tmp_path / "unused"), "read_aloud": str(read), "heldout": str(tiny_dataset), "train_read_aloud": str(read)}
    val_speakers = set(json.loads((tiny_run.run_dir / "data.json").read_text())["splits"]["val"])
    n_val_read = sum(row.speaker in val_speakers for row in read_dataset(read)[0])
    cfg_dict = json.loads(json.dumps(asdict(cfg)))
    with pytest.raises(ConfigError, match="shares one training"):
        run_rotation("A", str(ww), str(tmp_path / "run"), cfg_dict, data, progress=False)
    shared = {"dataset": str(tiny_dataset), "checkpoint": str(tiny_run.checkpoint), "train": {"best_epoch": 1}, "mining": {}}
    rot = run_rotation("A", str(ww), str(tmp_path / "run"), cfg_dict, data, progress=False, shared=shared)
    assert rot["train_negative_folders"] == [] and rot["validation_negative_folders"] == list(ROTATIONS["A"][0])
    assert rot["train"]["shared"] is True
    n_train_side = sum(len(list((ww / w).glob("*.flac"))) for w in ROTATIONS["A"][0])
    assert n_train_side == 4 and 0 < n_val_read < len(read_dataset(read)[0])
    assert rot["calibration"]["read_aloud_clips"] == n_val_read
    assert rot["calibration"]["extra_background_clips"] == n_train_side + n_val_read
    link = tmp_path / "run" / "rotation-A" / "dataset"
    assert link.is_symlink() and link.resolve() == tiny_dataset.resolve()
    from deploy.modelfile import KwsModel

    stored = KwsModel(link.parent / "model.onnx").info  # the model keeps the benchmark's calibration, not a placeholder
    assert (stored.threshold, stored.smoothing) == (rot["calibration"]["threshold"], rot["calibration"]["smoothing"])
    assert rot["test"]["n_keywords"] == 8
    ops = rot["test"]["operating_points"]
    assert [p["target_fa_per_hour"] for p in ops] == list(REPORT_TARGETS)
    frrs = [p["frr"] for p in ops if p["frr"] is not None]
    assert frrs == sorted(frrs, reverse=True)  # a looser false-accept budget never misses more
    assert all(p["frr_ci95"][0] <= p["frr"] <= p["frr_ci95"][1] for p in ops if p["frr"] is not None)  # bootstrap interval
    # --intervals-only replays them from the saved test scores of a run made before they existed: the same intervals.
    from deploy.benchmark_real import add_intervals

    bare = {**rot, "train": {**rot["train"], "epochs_run": 1, "seconds": 1.0},
            "test": {**rot["test"], "operating_points": [{k: v for k, v in p.items() if k != "frr_ci95"} for p in ops]}}
    (tmp_path / "run" / "report.json").write_text(json.dumps({"keyword": KEYWORD, "config": {**cfg_dict, "name": "tiny"}, "quick": True,
                                                              "rotations": [bare], "seconds": 1.0}))
    assert add_intervals(tmp_path / "run")["rotations"][0]["test"]["operating_points"] == ops
    assert "FRR [95% bootstrap interval]" in (tmp_path / "run" / "report.md").read_text()
    # --accents-only measures the accent stream again: the same stream at the same thresholds gives the same tables.
    from deploy.benchmark_real import add_accent_engines

    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    (tmp_path / "run" / "report.json").write_text(json.dumps({**saved, "data": data}))
    assert add_accent_engines(tmp_path / "run", progress=False)["rotations"][0]["accents"] == rot["accents"]
    assert set(rot["accents"]["calibrated"]["per_engine"]) == {"espeak"}

    # The decision lever (--tune-decision) sees calibration's stream: the same extra background gives the same
    # per-smoothing thresholds, and the pick follows calibration's rule.
    from deploy.benchmark_levers import tune_decision
    from deploy.calibrate import LOW_FA_SMOOTHINGS
    from deploy.benchmark_real import calibration_background, check_wake_words

    real, read_val = calibration_background("A", cfg, data, check_wake_words(ww), KwsModel(link.parent / "model.onnx").info)
    assert len(real) == n_train_side and len(read_val) == n_val_read
    cal = cfg.calibration
    own = KwsModel(link.parent / "model.onnx").info.refractory_s
    decision = tune_decision(link.parent, target_fa_per_hour=cal["target_fa_per_hour"], background_minutes=cal["background_minutes"],
                             snr_db=cfg.snr_db, seed=cfg.seed, choices=(1, 4), refractories_s=(own, 2 * own),
                             extra_background=real + read_val, progress=False)
    assert [(r["refractory_s"], r["smoothing"]) for r in decision["table"]] == [(own, 1), (own, 4), (2 * own, 1), (2 * own, 4)]
    by_smoothing = {p["smoothing"]: p["threshold"] for p in rot["calibration"]["by_smoothing"]}
    assert tuple(by_smoothing) == LOW_FA_SMOOTHINGS  # the benchmark offers its calibration up to 8 hops
    assert {r["smoothing"]: r["val_threshold"] for r in decision["table"] if r["refractory_s"] == own} == {1: by_smoothing[1], 4: by_smoothing[4]}
    assert decision["extra_background_clips"] == n_train_side + n_val_read

    # The benchmark's --ensemble on two finished runs holding the same model: the average is that model, so the
    # ensemble's calibration and test scores must be the member's.
    from deploy.benchmark_real import ensemble_benchmark

    runs = [tmp_path / "run", tmp_path / "run2"]
    (runs[1] / "rotation-A").mkdir(parents=True)
    (runs[1] / "rotation-A" / "model.onnx").write_bytes((runs[0] / "rotation-A" / "model.onnx").read_bytes())
    for run in runs:
        (run / "report.json").write_text(json.dumps({"config": cfg_dict, "data": data, "rotations": [rot]}))
    report = ensemble_benchmark(ww, runs, tmp_path / "both", progress=False)
    (ens,) = report["rotations"]
    assert ens["ensemble_of"] == [str(r / "rotation-A" / "model.onnx") for r in runs]
    assert ens["validation_negative_folders"] == rot["validation_negative_folders"]
    assert {k: ens["calibration"][k] for k in ("threshold", "smoothing", "frr", "false_accepts", "extra_background_clips")} == \
        {k: rot["calibration"][k] for k in ("threshold", "smoothing", "frr", "false_accepts", "extra_background_clips")}
    member, averaged = (np.load(r / "rotation-A" / "test_scores.npz") for r in (runs[0], tmp_path / "both"))
    assert np.array_equal(member["times"], averaged["times"])
    assert np.allclose(member["scores"], averaged["scores"], atol=1e-5)
    assert (tmp_path / "both" / "report.md").is_file()


LOCK_RUN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from pathlib import Path
from deploy.benchmark_real import BenchConfig, prepare_data
cfg = BenchConfig.from_dict(json.loads(sys.argv[2]))
print(json.dumps(prepare_data(Path(sys.argv[1]), cfg, progress=False)))
"""


def test_adapt_norm_rotation_adapts_to_its_training_side_real_speech_only(tmp_path, tiny_dataset, tiny_run):
    """adapt_norm: the rotation's model is the shared one with statistics from its training-side real clips under noise."""
    from dataclasses import asdict

    from deploy.benchmark_real import adaptation_stream, load_real_clips, run_rotation
    from deploy.modelfile import KwsModel
    from deploy.streams import trim_silence

    ww = _wake_words_from(tiny_dataset, tmp_path / "ww")
    read = _read_aloud_from(tiny_dataset, tmp_path / "read")
    cfg = BenchConfig.from_dict({"real_negatives": "validation", "adapt_norm": {"blend": 0.5},
                                 "calibration": {"background_minutes": 1.0, "target_fa_per_hour": 2.0},
                                 "test_background_minutes": 1.0, "accent_background_minutes": 0.5})
    files = check_wake_words(ww)
    stream = adaptation_stream("A", cfg, files)
    assert np.array_equal(stream, adaptation_stream("A", cfg, files))  # the same config gives the same audio
    train_side = [c.audio for w in ROTATIONS["A"][0] for c in load_real_clips(files[w], w)]
    assert len(stream) >= sum(len(trim_silence(a)) for a in train_side)  # every training-side clip, at least once
    data = {"synth": str(tmp_path / "unused"), "read_aloud": str(read), "heldout": str(tiny_dataset), "train_read_aloud": str(read)}
    shared = {"dataset": str(tiny_dataset), "checkpoint": str(tiny_run.checkpoint), "train": {"best_epoch": 1}, "mining": {}}
    rot = run_rotation("A", str(ww), str(tmp_path / "run"), json.loads(json.dumps(asdict(cfg))), data, progress=False, shared=shared)
    record = rot["norm_adaptation"]
    assert record["audio_seconds"] == round(len(stream) / 16000, 1) and record["source"] == str(tiny_run.checkpoint)
    assert record["audio_sha256"] == hashlib.sha256(stream.astype(np.float32).tobytes()).hexdigest()
    assert KwsModel(tmp_path / "run" / "rotation-A" / "model.onnx").info.metadata["norm_adaptation"] == record  # decoded JSON


def test_mining_with_a_fine_tuned_share_measures_the_interpolated_model(tmp_path, tiny_dataset, tiny_run):
    """mining.fine_tuned_share: the model a rotation measures is the fine-tuned one taken part of the way back to the first."""
    from deploy.benchmark_real import mine_and_fine_tune, rotation_dataset
    from train.checkpoint import load_checkpoint

    dataset = rotation_dataset(tmp_path / "dataset", tiny_dataset, {}, ())  # links: the mined session is written here, not there
    cfg = BenchConfig.from_dict({"train_config": "tiny.json", "mining": {"threshold": 0.05, "epochs": 1, "fine_tuned_share": 0.5}})
    out = tmp_path / "out"
    result, record = mine_and_fine_tune(out, dataset, tiny_run.checkpoint, cfg, _read_aloud_from(tiny_dataset, tmp_path / "read"),
                                        progress=False)
    assert result.checkpoint == out / "interpolated.pt"
    assert record["interpolation"] == load_checkpoint(out / "interpolated.pt")[1]["interpolation"]
    assert (record["interpolation"]["start"], record["interpolation"]["fine_tuned"]) == (str(tiny_run.checkpoint), str(out / "train-mined" / "best.pt"))
    assert record["rounds_run"][0]["kept"] > 0


def test_two_runs_wait_for_the_cache_lock_and_synthesise_once(tmp_path):
    """Two benchmark runs started while the cache is locked both wait, then one synthesises and the other reuses its data.

    Before the lock, two runs sharing a cache both synthesised into one
    folder and the manifest held every row twice. The test holds the lock
    itself until both runs say they wait, so the order is not left to chance.
    """
    import fcntl
    import subprocess
    import sys
    import time

    config = {"engines": ["espeak"], "synth": {"n_voices_per_accent": 1, "takes_per_voice": 2, "n_confusables": 1, "n_sentences": 1},
              "heldout_voices_per_accent": 1, "heldout_takes": 1, "read_aloud_voices_per_accent": 1, "read_aloud_takes_per_voice": 1,
              "read_aloud_sentences": [1, 1]}
    (tmp_path / "cache").mkdir()
    root = Path(__file__).resolve().parents[1]
    with open(tmp_path / "cache" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = [subprocess.Popen([sys.executable, "-c", LOCK_RUN, str(tmp_path), json.dumps(config)], cwd=root, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        waiting = [run.stderr.readline() for run in runs]  # blocks until each has logged its first line
        assert all("waiting for another benchmark run" in line for line in waiting), waiting
        time.sleep(0.5)
        assert all(run.poll() is None for run in runs)  # still waiting while the lock is held
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    folders = [json.loads(out) for out, _ in outputs]
    assert folders[0] == folders[1]
    rows, problems = read_dataset(Path(folders[0]["synth"]))
    assert not problems and len(rows) == 14 * (2 + 1 + 1) + 14  # each clip once: 14 accents x 4 prompts, 14 noise clips
    assert len({r.path for r in rows}) == len(rows)
    assert len(read_dataset(Path(folders[0]["read_aloud"]))[0]) == 14


def test_script_reports_bad_input_in_one_line(tmp_path):
    """A wrong folder or config is a message naming it (exit 2), not a traceback."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "real_speech.py"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nme": "typo"}))
    for args, needle in (([str(tmp_path / "absent"), "--config", "configs/bench-real.json"], "no .flac clips found"),
                         ([str(tmp_path), "--config", str(bad)], "unknown key(s) nme")):
        r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=script.parents[1], timeout=120)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_each_benchmark_step_runs_in_a_fresh_process_that_logs_as_the_parent(caplog, capfd):
    """Steps never share a process (a step's memory is returned when it ends), and their log lines still reach stderr."""
    import logging
    import os

    from deploy.benchmark_real import fresh_process_pool

    caplog.set_level(logging.INFO)  # the level the workers are told to log at
    with fresh_process_pool(1) as pool:
        pids = [pool.submit(os.getpid).result() for _ in range(3)]
        pool.submit(logging.getLogger("kws").info, "a message from step %d", 4).result()
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert "a message from step 4" in capfd.readouterr().err
