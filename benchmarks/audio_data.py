"""Data builder for the audio benchmark: spoken-language identification on Asterisk's studio prompts.

Debian's ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` hold the Asterisk PBX voice prompts as 8 kHz mono WAV
(one voice per language: en_US and es_MX 'Allison', fr_CA 'June', it_IT 'Carlo', ru_RU 'IvrvoiceRU'); the same
prompt file names recur across languages ('digits/7.wav', 'vm-youhave.wav'). A prompt's name is its path relative
to the voice folder. Split BY PROMPT NAME, once (seed 0, whatever the training seed): every language's recording
of a prompt lands in the same part, so no prompt heard in training, in any language, is in val or test; names
whose recordings are the same sound in a language (en 'seconds' and 'queue-seconds': one recording filed twice,
found by the data doctor's duplicate test) move together, so no recording is in two parts either. Left out:
the language-free sounds (``silence/*``, beeps, tones, the conference join/leave chimes, ``tt-monkeys``: the same
recording in every package) and empty files. Written the way real audio arrives, a class folder per language:

    root/{train,val,test}/<lang>/<prompt name with '/' -> '__'>.wav

``--per-language K`` keeps K training clips per language (a seeded subset, ``--seed``); val and test stay fixed.
Clips are hard links into (or copies of) the extracted packages, cached under ``--work``:

    .venv/bin/python benchmarks/audio_data.py /tmp/langid --per-language 10 --seed 0
    .venv/bin/transferkit fit --data /tmp/langid --model whisper-tiny-en --strategy linear-probe
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import soundfile as sf

from transferkit.data.audio_checks import audio_info, near_audio

LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGE = "asterisk-core-sounds-{}-wav"
SOUNDS = Path("usr/share/asterisk/sounds")
NON_SPEECH = frozenset({"beep.wav", "beeperr.wav", "ascending-2tone.wav", "descending-2tone.wav",
                        "confbridge-join.wav", "confbridge-leave.wav", "tt-monkeys.wav"})
FRACTIONS = {"test": 0.3, "val": 0.1}  # of the prompt names; the rest is train
SPLIT_SEED = 0
MARKER = ".dataset.json"  # written into root: what was built (hidden: the folder listing does not report it)
DEFAULT_WORK = Path.home() / ".cache" / "transferkit-bench" / "asterisk"


def extracted(language: str, work: Path) -> Path:
    """The voice folder of ``language``'s package, downloaded (`apt-get download`) and unpacked once under work."""
    target = work / "extracted" / language
    if not (target / SOUNDS).is_dir():
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        deb = next(debs.glob(f"{PACKAGE.format(language)}_*.deb"), None)
        if deb is None:
            download = ["apt-get", "download", "-q", PACKAGE.format(language)]
            if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
                subprocess.run(download, cwd=debs, check=True, capture_output=True)
            deb = next(debs.glob(f"{PACKAGE.format(language)}_*.deb"))
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    voices = sorted(p for p in (target / SOUNDS).iterdir() if p.is_dir())
    if len(voices) != 1:
        raise RuntimeError(f"{target / SOUNDS}: expected one voice folder, found {[v.name for v in voices]}")
    return voices[0]


def prompts(voice: Path) -> dict[str, Path]:
    """Prompt name (path relative to the voice folder, '/'-separated) -> file; language-free and empty files out."""
    found = {}
    for path in sorted(voice.rglob("*.wav")):
        name = path.relative_to(voice).as_posix()
        if name in NON_SPEECH or name.startswith("silence/") or sf.info(str(path)).frames == 0:
            continue
        found[name] = path
    return found


def linked_prompts(by_language: dict[str, dict[str, Path]], work: Path) -> list[list[str]]:
    """Prompt names whose recordings are the same sound in some language (one recording filed under two names, e.g.
    en 'seconds' and 'queue-seconds'): the data doctor's exact/near-duplicate test (transferkit.data.audio_checks),
    within each language. Cached in work/linked.json."""
    cache = work / "linked.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    links = []
    for found in by_language.values():
        infos = {name: audio_info(path) for name, path in found.items()}
        names = sorted(infos, key=lambda n: (infos[n].seconds, n))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if infos[b].seconds > infos[a].seconds * 1.05:  # near_audio needs durations within a few %
                    break
                if (infos[a].sha256 and infos[a].sha256 == infos[b].sha256) or near_audio(infos[a], infos[b]):
                    links.append(sorted((a, b)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(links))
    return links


def prompt_split(names: set[str] | list[str], links: list[list[str]] = (), seed: int = SPLIT_SEED) -> dict[str, str]:
    """Prompt name -> 'train' | 'val' | 'test': groups of linked names (each name alone, unless ``links`` joins
    it to others) in a seeded shuffle, cut by FRACTIONS of the names."""
    group = {name: {name} for name in names}
    for a, b in links:
        if a in group and b in group and group[a] is not group[b]:
            merged = group[a] | group[b]
            for name in merged:
                group[name] = merged
    order = sorted({min(g) for g in group.values()})
    random.Random(seed).shuffle(order)
    n_test, n_val = (round(len(group) * FRACTIONS[p]) for p in ("test", "val"))
    parts, count = {}, 0
    for first in order:
        part = "test" if count < n_test else "val" if count < n_test + n_val else "train"
        for name in group[first]:
            parts[name] = part
        count += len(group[first])
    return parts


def clips(work: Path = DEFAULT_WORK, languages: tuple[str, ...] = LANGUAGES) -> dict[str, dict[str, Path]]:
    """Language -> {prompt name -> file} for every usable prompt."""
    return {language: prompts(extracted(language, work)) for language in languages}


def choose(by_language: dict[str, dict[str, Path]], per_language: int | None, seed: int,
           links: list[list[str]] = ()) -> dict[str, list[tuple]]:
    """Split -> [(language, prompt name, file)]: the prompt-disjoint parts, train cut to ``per_language`` clips
    per language (a seeded sample; None: all)."""
    parts = prompt_split({name for found in by_language.values() for name in found}, links)
    chosen: dict[str, list[tuple]] = {"train": [], "val": [], "test": []}
    for language, found in sorted(by_language.items()):
        for part in chosen:
            items = [(language, name, path) for name, path in sorted(found.items()) if parts[name] == part]
            if part == "train" and per_language is not None:
                if per_language > len(items):
                    raise ValueError(f"--per-language {per_language}: {language} has only {len(items)} training "
                                     f"clips")
                items = sorted(random.Random(f"{seed}-{language}").sample(items, per_language))
            chosen[part] += items
    return chosen


def write(root: Path, chosen: dict[str, list[tuple]], info: dict) -> Path:
    """The folders under ``root`` (replaced if an earlier build of this script is there), plus root/.dataset.json."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise FileExistsError(f"{root} exists and was not written by this script; choose an empty folder")
        for part in chosen:
            shutil.rmtree(root / part, ignore_errors=True)
    for part, items in chosen.items():
        for language, name, path in items:
            target = root / part / language / name.replace("/", "__")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another filesystem: a copy
                shutil.copyfile(path, target)
    counts = {part: {lang: sum(1 for item in items if item[0] == lang) for lang in sorted({i[0] for i in items})}
              for part, items in chosen.items()}
    (root / MARKER).write_text(json.dumps({**info, "counts": counts}, indent=2))
    return root


def build(root: str | Path, per_language: int | None = None, seed: int = 0, work: str | Path = DEFAULT_WORK,
          languages: tuple[str, ...] = LANGUAGES) -> Path:
    """Write the language-ID folders under ``root``; returns root. See the module docstring."""
    by_language = clips(Path(work), languages)
    chosen = choose(by_language, per_language, seed, linked_prompts(by_language, Path(work)))
    info = {"source": [PACKAGE.format(lang) for lang in languages], "per_language": per_language, "seed": seed,
            "split": f"by prompt name (same-sound names together), seed {SPLIT_SEED}, test {FRACTIONS['test']}, "
                     f"val {FRACTIONS['val']}"}
    return write(Path(root), chosen, info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="output folder (empty, or an earlier build of this script)")
    parser.add_argument("--per-language", type=int, help="training clips per language (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="which training subset (val/test do not change)")
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="where the .deb files and their contents are kept")
    args = parser.parse_args()
    root = build(args.root, args.per_language, args.seed, args.work)
    print(json.dumps(json.loads((root / MARKER).read_text())["counts"]))


if __name__ == "__main__":
    main()
