"""``kws data``: every bad row is reported with its reason; the good ones are still counted."""

import shutil

from collect.datacheck import check_dataset
from collect.manifest import load_rows
from collect.synth import synthesize_dataset


def test_bad_rows_are_reported_together(tmp_path):
    synthesize_dataset(tmp_path, "computer", accents=["en-US", "en-029"], n_voices_per_accent=1, takes_per_voice=2,
                       n_confusables=1, n_sentences=1, n_noise=1, progress=False)
    rows = load_rows(tmp_path)
    (tmp_path / rows[0].path).unlink()  # missing file
    (tmp_path / rows[1].path).write_bytes(b"RIFF not really a wav")  # corrupt
    with open(tmp_path / rows[2].path, "r+b") as f:  # same length, changed bytes
        f.seek(100)
        f.write(b"\x01\x02\x03\x04")
    shutil.copy(tmp_path / rows[3].path, tmp_path / rows[4].path)  # other duration / sha
    manifest = tmp_path / rows[0].session / "manifest.jsonl"
    with open(manifest, "a") as f:
        f.write("{not json\n")
        f.write('{"path": "x.wav"}\n')

    report = check_dataset(tmp_path)
    reasons = {p.where: p.reason for p in report.problems}
    assert reasons[rows[0].path] == "file not found"
    assert reasons[rows[1].path].startswith("cannot read audio")
    assert "sha256" in reasons[rows[2].path]
    assert rows[4].path in reasons
    assert sum("not valid JSON" in r for r in reasons.values()) == 1
    assert sum("missing fields" in r for r in reasons.values()) == 1
    assert len(report.good) == len(rows) - 4
    text = report.to_text()
    assert "file not found" in text and "en-029" in text
