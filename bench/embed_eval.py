#!/usr/bin/env python3
"""Offline experiments on what to embed per tool (MetaTool dev split only).

    cargo build --release --example embed
    python bench/embed_eval.py --model DIR --dump scores.jsonl [--data ../shared/toolsearch]

Embeds every dev query once (cached in --work), embeds each tool under a few
text variants, and prints Recall@1, Recall@5 and nDCG@10 of the semantic
scores and of the hybrid fusion with the keyword (BM25) scores of a dump
(`bench/search.py quality --dump`). This is how the two vectors per tool
(what it does, and its name) and NAME_WEIGHT in src/search/semantic.rs were
chosen. Needs numpy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np

DIMS = 384


def split_words(text: str) -> str:
    """The gateway's split_words (src/search/mod.rs)."""
    out, prev = [], None
    for c in text:
        if c in "_-./:":
            out.append(" ")
        else:
            if prev is not None and (prev.islower() or prev.isdigit()) and c.isupper():
                out.append(" ")
            out.append(c)
        prev = c
    return "".join(out).strip()


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def embed(binary: Path, model: str, texts: list[str], out: Path) -> np.ndarray:
    if not out.exists():
        src = out.with_suffix(".jsonl")
        src.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
        with src.open() as stdin:
            subprocess.run([str(binary), model, str(out)], stdin=stdin, check=True)
    return np.fromfile(out, dtype="<f4").reshape(-1, DIMS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--dump", required=True, help="bench/search.py quality --dump output (keyword scores)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "toolsearch"))
    p.add_argument("--work", default="/tmp/metamcp-embed-eval")
    p.add_argument("--binary", default=str(Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "release" / "examples" / "embed"))
    args = p.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tools = [json.loads(line) for line in (data / "tools.jsonl").open()]
    queries = [json.loads(line) for line in (data / "queries.dev.jsonl").open()]
    idx = {t["id"]: i for i, t in enumerate(tools)}
    q = embed(Path(args.binary), args.model, [x["query"] for x in queries], work / "queries.f32")
    variants = {
        "name: description (one vector)": lambda t: f"{split_words(safe_name(t['name']))}: {t['description']}",
        "description": lambda t: t["description"],
        "name": lambda t: split_words(safe_name(t["name"])),
    }
    sims = {}
    for i, (label, text) in enumerate(variants.items()):
        v = embed(Path(args.binary), args.model, [text(t) for t in tools], work / f"tools-{i}.f32")
        sims[label] = q @ v.T
    keyword = np.zeros_like(sims["name"])
    row_of = {x["id"]: i for i, x in enumerate(queries)}
    for line in open(args.dump, encoding="utf-8"):
        row = json.loads(line)
        for tool, score in row["keyword"].items():
            if tool in idx:
                keyword[row_of[row["id"]], idx[tool]] = score
    relevant = [[idx[t] for t in x["relevant"]] for x in queries]

    def evaluate(scores: np.ndarray, label: str) -> None:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        r1 = r5 = nd = 0.0
        for qi, rel in enumerate(relevant):
            ranked, rel_set = list(top[qi]), set(rel)
            r1 += len(rel_set & set(ranked[:1])) / len(rel)
            r5 += len(rel_set & set(ranked[:5])) / len(rel)
            dcg = sum(1 / math.log2(i + 2) for i, t in enumerate(ranked) if t in rel_set)
            nd += dcg / sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        n = len(relevant)
        print(f"{label:<58} {100 * r1 / n:6.2f} {100 * r5 / n:6.2f} {100 * nd / n:8.2f}", flush=True)

    def hybrid(sem: np.ndarray, w: float = 0.85, c: float = 10.0) -> np.ndarray:
        return w * sem + (1 - w) * np.where(keyword > 0, keyword / (keyword + c), 0.0)

    print(f"{'scores':<58} {'R@1':>6} {'R@5':>6} {'nDCG@10':>8}")
    for label, s in sims.items():
        evaluate(s, f"semantic: {label}")
        evaluate(hybrid(s), f"hybrid 0.85/C10: {label}")
    for a in (0.2, 0.25, 0.3, 0.35, 0.4):
        two = (1 - a) * sims["description"] + a * sims["name"]
        evaluate(two, f"semantic: two vectors, name weight {a}")
        for w in (0.8, 0.85, 0.9):
            for c in (5.0, 10.0, 20.0):
                evaluate(hybrid(two, w, c), f"hybrid {w}/C{c:g}: two vectors, name weight {a}")


if __name__ == "__main__":
    main()
