"""``kws data forget`` and ``kws data import``, and ``kws data DATASET`` still checking as before.

Datasets are made by importing real audio files (espeak-ng speech written in
other formats), so these tests need no audio device.
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from collect.dataset_ops import forget_speaker, import_folder
from collect.datacheck import check_dataset
from collect.manifest import read_dataset
from features.errors import ManifestError

RUN_KWS = "import deploy.cli.record, deploy.cli.data; from deploy.cli import main; main()"


def kws(*args):
    return subprocess.run([sys.executable, "-c", RUN_KWS, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def speech():
    from collect.synth import synthesize

    return {w: synthesize(w, "en-us") for w in ("computer", "commuter", "hello")}


@pytest.fixture
def folder(tmp_path, speech):
    """Clips as another tool left them: 44.1 kHz stereo, FLAC, Speech Commands names, one corrupt, one stray file."""
    from features.audio import resample

    src = tmp_path / "elsewhere"
    (src / "computer").mkdir(parents=True)
    (src / "unknown").mkdir()
    stereo = resample(speech["computer"], 16000, 44100)
    sf.write(src / "computer" / "0a1b2c3d_nohash_0.wav", np.stack([stereo, stereo], 1), 44100)
    sf.write(src / "computer" / "0a1b2c3d_nohash_1.flac", speech["computer"], 16000)
    sf.write(src / "unknown" / "ffee0011_nohash_0.wav", speech["commuter"], 16000)
    (src / "unknown" / "ffee0011_nohash_9.wav").write_bytes(b"RIFF\0\0\0\0WAVEnot audio")
    sf.write(src / "loose.wav", speech["hello"], 16000)
    return src


def test_import_by_folder_names(tmp_path, folder):
    ds = tmp_path / "ds"
    report = import_folder(ds, folder, accent="en-US", session="imp1")
    assert sorted((r.label, r.speaker, r.kind) for r in report.imported) == [
        ("computer", "0a1b2c3d", "keyword"), ("computer", "0a1b2c3d", "keyword"), ("negative", "ffee0011", "other")]
    refused = dict(report.refused)
    assert "cannot read audio" in refused["unknown/ffee0011_nohash_9.wav"]
    assert "no label" in refused["loose.wav"]
    check = check_dataset(ds)
    assert check.problems == [] and len(check.good) == 3
    for row in check.good:
        info = sf.info(ds / row.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    again = import_folder(ds, folder, accent="en-US", session="imp2")
    assert not again.imported and sum("already in the dataset" in why for _, why in again.refused) == 3


def test_import_with_metadata_csv_lists_what_it_cannot_import(tmp_path, folder):
    meta = tmp_path / "meta.csv"
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", "accent", "text"])
        w.writerow(["computer/0a1b2c3d_nohash_0.wav", "computer", "vol-1", "en-GB-scotland", "computer"])
        w.writerow(["unknown/ffee0011_nohash_0.wav", "negative", "vol-2", "en-IN", "commuter"])
        w.writerow(["missing.wav", "computer", "vol-1", "en-GB-scotland", ""])
        w.writerow(["computer/0a1b2c3d_nohash_1.flac", "computer", "Jane Smith", "en-US", ""])
        w.writerow(["loose.wav", "negative", "vol-3", "", "hello"])
    ds = tmp_path / "ds"
    result = kws("data", "import", ds, folder, "--metadata", meta, "--session", "imp")
    assert result.returncode == 1, result.stderr
    assert "imported 2 clips into session imp" in result.stdout
    assert "meta.csv:4: file not found: missing.wav" in result.stdout
    assert "meta.csv:5: speaker id 'Jane Smith' is not a short pseudonym" in result.stdout
    assert "meta.csv:6: no accent" in result.stdout
    assert "unknown/ffee0011_nohash_9.wav: not listed in meta.csv" in result.stdout
    rows, _ = read_dataset(ds)
    assert sorted((r.speaker, r.accent, r.label, r.text) for r in rows) == [
        ("vol-1", "en-GB-scotland", "computer", "computer"), ("vol-2", "en-IN", "negative", "commuter")]


def test_forget_removes_a_speaker_and_says_what(tmp_path, folder):
    ds = tmp_path / "ds"
    import_folder(ds, folder, accent="en-US", session="imp")
    before = {r.path for r in read_dataset(ds)[0] if r.speaker == "0a1b2c3d"}
    result = kws("data", "forget", ds, "--speaker", "0a1b2c3d")
    assert result.returncode == 0, result.stderr
    assert "removed speaker 0a1b2c3d: 2 rows from 1 sessions (imp), 2 files deleted" in result.stdout
    rows, _ = read_dataset(ds)
    assert [r.speaker for r in rows] == ["ffee0011"]
    assert not any((ds / p).exists() for p in before)
    assert check_dataset(ds).problems == []
    with pytest.raises(ManifestError, match="no clips of speaker '0a1b2c3d'.*ffee0011"):
        forget_speaker(ds, "0a1b2c3d")


def test_forget_keeps_corrupt_lines_and_reports_them(tmp_path, folder):
    ds = tmp_path / "ds"
    import_folder(ds, folder, accent="en-US", session="imp")
    manifest = ds / "imp" / "manifest.jsonl"
    with open(manifest, "a") as f:
        f.write('{"path": "imp/x.wav", "label": "comp\n')
    report = forget_speaker(ds, "ffee0011")
    assert len(report.rows) == 1 and report.unreadable and "imp/manifest.jsonl:4" in report.unreadable[0]
    assert manifest.read_text().splitlines()[-1] == '{"path": "imp/x.wav", "label": "comp'


def test_corrupt_manifest_line_is_reported_and_the_rest_readable(tmp_path, folder):
    ds = tmp_path / "ds"
    import_folder(ds, folder, accent="en-US", session="imp")
    manifest = ds / "imp" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a line cut in half
    manifest.write_text("\n".join(lines) + "\n")
    result = kws("data", ds)  # the old form: kws data DATASET
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2 good clips" in result.stdout and "imp/manifest.jsonl:2: not valid JSON" in result.stdout
    assert kws("data", "check", ds, "--no-sha").returncode == 1


def test_data_without_subcommand_still_checks(tmp_path, folder):
    ds = tmp_path / "ds"
    import_folder(ds, folder, accent="en-US", session="imp")
    out = tmp_path / "counts.json"
    result = kws("data", ds, "--speakers", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "3 good clips" in result.stdout and "0a1b2c3d" in result.stdout
    assert json.loads(out.read_text())["good"] == 3
    missing = kws("data", tmp_path / "nowhere")
    assert missing.returncode == 2 and "dataset folder not found" in missing.stderr
