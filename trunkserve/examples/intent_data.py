"""A small 3-class intent task made from templates: the kind of data a user brings first.

``python -m trunkserve.examples.intent_data --out data/intent`` writes ``train.csv`` (300 rows) and
``dev.csv`` (60 rows), columns ``text,label``, labels ``play_music``, ``set_alarm``,
``weather``. Train and dev use disjoint slot values, so dev sentences are never
training sentences. Seeded: the same call writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

TEMPLATES = {
    "play_music": ["play {song}", "put on some {genre}", "i want to hear {song} by {artist}", "play {genre} music please",
                   "can you play something by {artist}", "start my {genre} playlist", "queue up {song}",
                   "let's listen to {artist}", "play the album by {artist}", "shuffle some {genre} songs"],
    "set_alarm": ["wake me up at {time}", "set an alarm for {time}", "alarm at {time} {day}", "remind me at {time} to get up",
                  "i need to be up by {time} {day}", "set my alarm to {time}", "can you wake me at {time} {day}",
                  "create an alarm for {time} {day}", "please set a {time} alarm", "get me up at {time}"],
    "weather": ["what's the weather in {city}", "will it rain in {city} {day}", "how hot is it in {city}",
                "is it going to snow {day} in {city}", "weather forecast for {city}", "do i need an umbrella {day}",
                "how cold will it be in {city} {day}", "what's the temperature outside in {city}",
                "is it sunny in {city} {day}", "tell me the forecast for {day}"],
}
SLOTS = {
    "train": {
        "song": ["yesterday", "bohemian rhapsody", "hey jude", "imagine", "wonderwall", "hotel california"],
        "genre": ["jazz", "rock", "classical", "hip hop"],
        "artist": ["the beatles", "queen", "adele", "miles davis", "taylor swift"],
        "time": ["7", "6 am", "half past six", "8:30", "noon", "5:45"],
        "day": ["tomorrow", "on monday", "tonight", "on friday"],
        "city": ["paris", "london", "tokyo", "berlin", "chicago", "madrid"],
    },
    "dev": {
        "song": ["let it be", "purple rain", "thriller"],
        "genre": ["blues", "reggae", "country"],
        "artist": ["bob marley", "prince", "nina simone"],
        "time": ["9", "7:15", "quarter to eight"],
        "day": ["on sunday", "this weekend", "on wednesday"],
        "city": ["rome", "sydney", "toronto", "oslo"],
    },
}


def intent_rows(n: int, split: str = "train", seed: int = 0) -> list[dict]:
    """``n`` rows ``{"text", "label"}``, classes in turn, slot values from ``split``'s pool."""
    rng = random.Random(f"{split}:{seed}")
    labels = sorted(TEMPLATES)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        template = rng.choice(TEMPLATES[label])
        text = template.format(**{k: rng.choice(v) for k, v in SLOTS[split].items()})
        rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


def write_intent_task(out: str | Path, train_rows: int = 300, dev_rows: int = 60, seed: int = 0) -> tuple[Path, Path]:
    out = Path(out)
    return (write_csv(out / "train.csv", intent_rows(train_rows, "train", seed)),
            write_csv(out / "dev.csv", intent_rows(dev_rows, "dev", seed)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trunkserve.examples.intent_data", description=__doc__,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="data/intent", help="folder for train.csv and dev.csv")
    ap.add_argument("--train-rows", type=int, default=300, help="training rows")
    ap.add_argument("--dev-rows", type=int, default=60, help="dev rows (slot values unseen in training)")
    ap.add_argument("--seed", type=int, default=0, help="template and slot sampling seed")
    a = ap.parse_args(argv)
    train, dev = write_intent_task(a.out, a.train_rows, a.dev_rows, a.seed)
    print(f"wrote {train} ({a.train_rows} rows) and {dev} ({a.dev_rows} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
