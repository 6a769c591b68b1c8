"""What to record next: speakers needed per accent, and advice computed from an evaluation report.

An evaluation is only worth running if it changes what gets collected next.
This module turns the report's numbers into two things:

- ``accent_plan``: per accent, the FRR interval that accounts for takes of
  one speaker being correlated, and how many more speakers of that accent
  (at its current takes per speaker and its current FRR) would bring the
  interval's half-width under a target. The method, in full:

  1. the intraclass correlation ``rho`` of misses between takes of one
     speaker is estimated once from every test speaker, speakers nested in
     accents (``deploy.stats.speaker_icc``), and never taken below
     ``icc_floor``: a handful of speakers cannot show that their takes are
     independent, and assuming so would promise narrow intervals from
     recording more takes of the same few people;
  2. per accent with ``S`` speakers, ``N`` keyword takes, ``m = N / S``:
     design effect ``DE = 1 + (m - 1) rho``, effective size ``N / DE``, and the
     Wilson interval of the accent's FRR at that effective size;
  3. the speakers needed for a half-width ``h`` are
     ``ceil(n_h * DE / m)``, where ``n_h`` is the effective size at which the
     Wilson half-width at the accent's FRR is ``h``
     (``deploy.stats.n_for_half_width``); the advice is the difference from
     ``S``.

  The current FRR is the planning value, so an accent measured at 0% on two
  speakers is planned at 0% (the Wilson interval is still wide there); the
  figure is an estimate for planning, not a guarantee.

- ``advise``: sentences, each backed by the numbers it quotes: the accents
  with the widest or highest intervals and how many speakers to record, the
  background that causes false accepts, confusable words that fire, low-SNR
  takes, higher- or lower-pitched voices and drawn-out keywords (measured
  from the audio, ``deploy.voice_bands``) when their FRR is significantly higher, and how much background a
  false-accept target needs. A rule that the data do not support says
  nothing, so a report may have few sentences, never filler.
"""

from __future__ import annotations

import statistics

from deploy.stats import (
    clustered_z_test,
    design_effect,
    poisson_interval,
    speaker_icc,
    speakers_needed,
    wilson_half_width,
    wilson_interval,
)
from features.errors import ConfigError

DEFAULT_CI_TARGET = 0.05  # half-width of the per-accent FRR interval to plan for (5 points)
ICC_FLOOR = 0.1  # smallest correlation between takes of one speaker that the plan assumes
SIGNIFICANT = 0.05  # one-sided p-value below which a difference is called out
ACCENTS_NAMED = 3  # accents given a sentence of their own; the rest are summed up in one
KIND_WORDS = {"sentence": "read-aloud sentences", "noise": "noise clips", "gap": "the noise bed alone, between clips",
              "confusable": "confusable words", "negative": "other speech"}
SPEECH_KINDS = {"sentence", "negative", "confusable"}


def check_ci_target(half_width: float) -> None:
    if not (isinstance(half_width, (int, float)) and 0.0 < half_width < 0.5):
        raise ConfigError(f"--ci-target must be between 0 and 50 percentage points (half-width of the FRR interval), got {100 * half_width:g}")


def accent_plan(per_speaker: dict, per_accent: dict, half_width: float = DEFAULT_CI_TARGET, icc_floor: float = ICC_FLOOR) -> dict:
    """Speaker-aware FRR intervals and speakers needed per accent (the method is in the module docstring)."""
    check_ci_target(half_width)
    if not 0.0 <= icc_floor <= 1.0:
        raise ConfigError(f"the ICC floor must be between 0 and 1, got {icc_floor}")
    counts = [(r["accent"], r["misses"], r["n_keyword"]) for r in per_speaker.values() if r["n_keyword"]]
    estimate = speaker_icc(counts)
    icc = max(estimate if estimate is not None else 0.0, icc_floor)
    accents = {}
    for accent, r in sorted(per_accent.items()):
        n = r["n_keyword"]
        s = sum(1 for a, _, k in counts if a == accent)
        if not n or not s:
            continue
        m = n / s
        de = design_effect(m, icc)
        n_eff = n / de
        p = r["misses"] / n
        lo, hi = wilson_interval(r["misses"] / de, n_eff)  # the same proportion, on the effective number of takes
        total = speakers_needed(p, m, icc, half_width)
        accents[accent] = {
            "n_speakers": s, "n_keyword": n, "takes_per_speaker": round(m, 2), "frr": p, "misses": r["misses"],
            "design_effect": round(de, 3), "effective_n": round(n_eff, 2), "frr_ci_speakers": [round(lo, 6), round(hi, 6)],
            "half_width": round(wilson_half_width(p, n_eff), 6), "speakers_needed": total, "more_speakers": max(0, total - s),
        }
    return {"icc_estimate": None if estimate is None else round(estimate, 4), "icc_floor": icc_floor, "icc": round(icc, 4),
            "target_half_width": half_width, "accents": accents}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(ci) -> str:
    return f"{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%"


def _accent_advice(report: dict, plan: dict) -> list[dict]:
    accents = plan["accents"]
    out = []
    target = f"±{100 * plan['target_half_width']:g} points"
    trained = set(report.get("model", {}).get("training_accents") or [])
    missing = sorted(trained - set(report.get("per_accent", {})) - {""})
    if missing and accents:
        s = report["stream"]
        m = statistics.median(a["takes_per_speaker"] for a in accents.values())
        k = speakers_needed(s["frr"], m, plan["icc"], plan["target_half_width"])
        out.append({"topic": "accent", "accents": missing, "speakers": k,
                    "text": f"No test speaker for {', '.join(missing)}: the model was trained on these accents but their FRR "
                            f"is unknown. Record test speakers of them: about {k} each (at {m:g} takes) would pin an FRR "
                            f"like the overall {_pct(s['frr'])} to {target}."})
    if not accents:
        return out
    need = sorted(((a, r) for a, r in accents.items() if r["more_speakers"]), key=lambda x: (-x[1]["frr_ci_speakers"][1], x[0]))
    if not need:
        out.append({"topic": "accent", "accents": [], "speakers": 0,
                    "text": f"Every accent's FRR interval is already within {target} (accounting for speakers): "
                            "more speakers of the same accents would change little; new accents would."})
    for a, r in need[:ACCENTS_NAMED]:
        out.append({"topic": "accent", "accents": [a], "speakers": r["more_speakers"],
                    "text": f"Record {r['more_speakers']} more speakers of {a}: FRR {_pct(r['frr'])} "
                            f"({_ci(r['frr_ci_speakers'])}) from {r['n_speakers']} speaker(s); "
                            f"{r['speakers_needed']} speakers at {r['takes_per_speaker']:g} takes each would narrow it to {target}."})
    rest = need[ACCENTS_NAMED:]
    if rest:
        more = [r["more_speakers"] for _, r in rest]
        out.append({"topic": "accent", "accents": [a for a, _ in rest], "speakers": sum(more),
                    "text": f"The other {len(rest)} accents need {min(more)}-{max(more)} more speakers each "
                            f"({sum(more)} in all) for the same precision: {', '.join(a for a, _ in rest)}."})
    # accents whose FRR is above the rest's beyond chance: their speakers belong in training, not only in testing
    total_k = sum(r["misses"] for r in accents.values())
    total_n = sum(r["n_keyword"] for r in accents.values())
    mean_m = total_n / sum(r["n_speakers"] for r in accents.values())
    for a, r in sorted(accents.items(), key=lambda x: -x[1]["frr"]):
        k_rest, n_rest = total_k - r["misses"], total_n - r["n_keyword"]
        if not n_rest or r["n_speakers"] < 2:  # one speaker's FRR says nothing about the accent apart from the speaker
            continue
        pval = clustered_z_test(r["misses"], r["n_keyword"], r["design_effect"], k_rest, n_rest,
                                design_effect(mean_m, plan["icc"]))
        if pval < SIGNIFICANT:
            out.append({"topic": "accent", "accents": [a], "p_value": round(pval, 4), "speakers": r["more_speakers"],
                        "text": f"{a} is missed more than the other accents: FRR {_pct(r['frr'])} against "
                                f"{_pct(k_rest / n_rest)} (one-sided p = {pval:.3f}, allowing for speakers). Speakers of "
                                f"{a} are worth adding to training, not only to the test set."})
    return out


def _background_advice(report: dict) -> list[dict]:
    s, e = report["stream"], report.get("errors") or {}
    out = []
    sources = e.get("false_accept_sources") or {}
    by_kind = sources.get("by_kind") or {}
    n_fa = s["false_accepts"]
    if n_fa:
        played = sum(v["seconds"] for v in by_kind.values()) or 1.0
        kind, v = max(by_kind.items(), key=lambda x: (x[1]["false_accepts"], x[0]))
        words = KIND_WORDS.get(kind, kind)
        share_t = v["seconds"] / played
        fix = ("add more long negative speech of that kind to training, starting with the cut-out false accepts in errors/"
               if kind in SPEECH_KINDS else "add more noise of that kind to training as negatives")
        out.append({"topic": "background", "kind": kind, "false_accepts": v["false_accepts"],
                    "text": f"{v['false_accepts']} of {n_fa} stream false accepts came during {words}"
                            + ("" if kind == "gap" else " (the only kind of background in this stream)" if share_t > 0.995
                               else f" ({_pct(share_t)} of the background time)") + f": {fix}."})
        repeat = [(p, c) for p, c in (sources.get("by_clip") or {}).items() if c["false_accepts"] >= 2]
        for path, c in repeat[:3]:
            what = f"“{c['text']}”" if c["text"] else KIND_WORDS.get(c["kind"], c["kind"])
            out.append({"topic": "background", "path": path, "false_accepts": c["false_accepts"],
                        "text": f"{what} (`{path}`) fired {c['false_accepts']} times as the stream replayed it: a hard "
                                "negative; record it and similar material as negatives."})
    target = (report.get("model", {}).get("calibration") or {}).get("target_fa_per_hour") or 1.0
    lo, hi = s["fa_per_hour_ci"]
    if lo > target:
        out.append({"topic": "background", "target_fa_per_hour": target,
                    "text": f"False accepts run at {s['fa_per_hour']:.1f}/h ({lo:.1f}-{hi:.1f}), above the target of "
                            f"{target:g}/h even at the interval's lower end: more negative speech in training is the first need."})
    elif hi > target:
        hours = poisson_interval(0)[1] / target
        out.append({"topic": "background", "target_fa_per_hour": target, "hours_needed": round(hours, 2),
                    "text": f"{s['background_hours'] * 60:.0f} min of background cannot show {target:g} false accept/h "
                            f"(the interval reaches {hi:.1f}/h): even with none at all it takes {hours:.1f} h. Collect more "
                            f"hours of held-out negative speech (and evaluate with --background-minutes {60 * hours:.0f} or more)."})
    return out


def _confusable_advice(report: dict) -> list[dict]:
    words: dict[str, list[int]] = {}
    for r in report.get("clip_results", []):
        if r.get("kind") == "confusable":
            w = words.setdefault(r.get("text") or r["path"], [0, 0])
            w[0] += r["predicted"] != r["truth"]
            w[1] += 1
    fired = sorted(((t, f, n) for t, (f, n) in words.items() if f), key=lambda x: (-x[1] / x[2], x[0]))
    if not fired:
        return []
    listed = "; ".join(f"“{t}” on {f} of {n} takes" for t, f, n in fired[:5])
    return [{"topic": "confusable", "words": [t for t, _, _ in fired],
             "text": f"Confusable words fire when spoken alone: {listed}. Record more takes of them, by more speakers, "
                     "as negatives."}]


def _condition_advice(report: dict, plan: dict) -> list[dict]:
    out = []
    e = report.get("errors") or {}
    kws = [{**k, "missed": not k["hit"]} for k in e.get("keywords", []) if k.get("snr_db") is not None]
    if len(kws) >= 6 and any(k["missed"] for k in kws):
        cut = sorted(k["snr_db"] for k in kws)[len(kws) // 3]
        test = _split_test(kws, lambda k: k["snr_db"] < cut, plan, min_n=1)
        if test and test[4] < SIGNIFICANT:
            kl, nl, kh, nh, pval = test
            out.append({"topic": "condition", "snr_below_db": round(cut, 1), "p_value": round(pval, 4),
                        "text": f"Quiet takes are missed more: FRR {_pct(kl / nl)} below {cut:.1f} dB SNR "
                                f"({nl} keywords) against {_pct(kh / nh)} above (one-sided p = {pval:.3f}). "
                                "Record takes at a distance from the microphone and in noisier rooms."})
    misses = [k for k in e.get("keywords", []) if not k["hit"]]
    alone = {r["path"] for r in report.get("clip_results", []) if r["truth"] != "negative" and r["predicted"] == r["truth"]}
    heard = [k for k in misses if k["path"] in alone]
    if len(misses) >= 3 and 2 * len(heard) >= len(misses):
        out.append({"topic": "condition", "misses": len(misses), "detected_alone": len(heard),
                    "text": f"{len(heard)} of the {len(misses)} stream misses were detected when the same clip was played "
                            "alone: the noise and neighbouring speech, not the voices, cause them. Record in noisier "
                            "rooms, with speech around."})
    return out


def _split_test(keywords: list[dict], is_a, plan: dict, min_n: int = 3):
    """``(k_a, n_a, k_b, n_b, p)``: misses in group a and b (``is_a(keyword)``) and the one-sided p that a is worse.

    Takes of one speaker are correlated: both groups' variances carry the
    design effect of the report's intraclass correlation (``plan["icc"]``).
    """
    a = [k for k in keywords if is_a(k)]
    b = [k for k in keywords if not is_a(k)]
    if len(a) < min_n or len(b) < min_n:
        return None
    de = design_effect(len(keywords) / max(1, len({k["speaker"] for k in keywords})), plan["icc"])
    ka, kb = sum(k["missed"] for k in a), sum(k["missed"] for k in b)
    return ka, len(a), kb, len(b), clustered_z_test(ka, len(a), de, kb, len(b), de)


def _voice_advice(report: dict, plan: dict) -> list[dict]:
    """Voices missed more than the others, by measured pitch or spoken length (``deploy.voice_bands``)."""
    from deploy.voice_bands import HIGH_PITCH_HZ, LONG_S

    keywords = [k for k in (report.get("per_voice") or {}).get("keywords", []) if k["pitch_hz"] is not None]
    out = []
    rules = [
        (lambda k: k["pitch_hz"] >= HIGH_PITCH_HZ, f"at or above {HIGH_PITCH_HZ:.0f} Hz", f"below {HIGH_PITCH_HZ:.0f} Hz",
         "Higher-pitched voices are missed more", "Record more speakers with higher voices (most women and children)."),
        (lambda k: k["pitch_hz"] < HIGH_PITCH_HZ, f"below {HIGH_PITCH_HZ:.0f} Hz", f"at or above {HIGH_PITCH_HZ:.0f} Hz",
         "Lower-pitched voices are missed more", "Record more speakers with deeper voices (most men)."),
        (lambda k: k["spoken_s"] >= LONG_S, f"lasting {LONG_S:g} s or more", f"shorter than {LONG_S:g} s",
         "Drawn-out keywords are missed more", "Record slow, drawn-out takes, and takes with sound around the word."),
    ]
    for is_a, a_name, b_name, what, ask in rules:
        test = _split_test(keywords, is_a, plan)
        if test and test[4] < SIGNIFICANT:
            ka, na, kb, nb, pval = test
            out.append({"topic": "voice", "group": a_name, "frr": round(ka / na, 4), "others_frr": round(kb / nb, 4), "p_value": round(pval, 4),
                        "text": f"{what}: FRR {_pct(ka / na)} {a_name} ({na} keywords) against {_pct(kb / nb)} {b_name} "
                                f"(one-sided p = {pval:.3f}, speakers' takes counted as correlated). {ask}"})
    return out


def advise(report: dict, plan: dict) -> list[dict]:
    """Advice on what to record next, each item ``{"topic", "text", ...the numbers it quotes}``; see the module docstring."""
    return (_accent_advice(report, plan) + _voice_advice(report, plan) + _confusable_advice(report) + _background_advice(report)
            + _condition_advice(report, plan))
