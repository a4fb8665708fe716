#!/usr/bin/env python3
"""Tunes the hybrid fusion on a dump of per-query keyword and semantic scores
(bench/search.py quality --dump FILE; the dev split only).

    python bench/tune_fusion.py scores.jsonl

Tries the weighted sum the gateway uses (w * cosine + (1 - w) * bm25 / best
bm25 of the query) for a range of w, and reciprocal rank fusion with a range
of k, and prints Recall@1, Recall@5 and nDCG@10 of each.
"""

import json
import math
import sys


def evaluate(rows, score):
    s1 = s5 = sn = 0.0
    for row in rows:
        tools = set(row["keyword"]) | set(row["semantic"])
        ranked = sorted(tools, key=lambda t: (-score(row, t), t))
        rel = set(row["relevant"])
        s1 += len(rel & set(ranked[:1])) / len(rel)
        s5 += len(rel & set(ranked[:5])) / len(rel)
        dcg = sum(1 / math.log2(i + 2) for i, t in enumerate(ranked[:10]) if t in rel)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        sn += dcg / idcg
    n = len(rows)
    return 100 * s1 / n, 100 * s5 / n, 100 * sn / n


def main():
    rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
    for row in rows:
        kw = row["keyword"]
        row["best"] = max(kw.values(), default=0.0)
        sem = row["semantic"]
        row["floor"] = min(sem.values(), default=0.0)
        row["krank"] = {t: i for i, t in enumerate(sorted(kw, key=lambda t: -kw[t]))}
        row["srank"] = {t: i for i, t in enumerate(sorted(sem, key=lambda t: -sem[t]))}

    def weighted(w):
        def score(row, t):
            cos = row["semantic"].get(t, row["floor"])
            kw = row["keyword"].get(t, 0.0) / row["best"] if row["best"] > 0 else 0.0
            return w * cos + (1 - w) * kw
        return score

    def rrf(k, ws=1.0):
        def score(row, t):
            s = 0.0
            if t in row["krank"]:
                s += 1 / (k + row["krank"][t] + 1)
            if t in row["srank"]:
                s += ws / (k + row["srank"][t] + 1)
            return s
        return score

    print(f"{'fusion':<22} {'R@1':>6} {'R@5':>6} {'nDCG@10':>8}")
    for w in [0.0, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0]:
        r = evaluate(rows, weighted(w))
        print(f"weighted w={w:<13} {r[0]:6.2f} {r[1]:6.2f} {r[2]:8.2f}")
    for k in [10, 30, 60]:
        for ws in [1.0, 1.5, 2.0]:
            r = evaluate(rows, rrf(k, ws))
            print(f"rrf k={k:<3} ws={ws:<9} {r[0]:6.2f} {r[1]:6.2f} {r[2]:8.2f}")


if __name__ == "__main__":
    main()
