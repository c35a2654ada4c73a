#!/usr/bin/env python3
"""FAISS side of the indexer benchmark (scripts/bench-indexer.sh).

generate: clustered synthetic unit vectors, written once as .npy.
search:   exact top-k with faiss.IndexFlatIP (k+1, self removed).
compare:  deepcuts' table against FAISS's, id for id, explaining each
          difference only if it is a true tie (equal f64 scores).
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def generate(args):
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = np.empty((args.rows, args.dim), dtype=np.float32)
    step = 50_000
    for start in range(0, args.rows, step):
        end = min(args.rows, start + step)
        assign = rng.integers(0, args.clusters, end - start)
        noise = rng.standard_normal((end - start, args.dim)).astype(np.float32)
        block = centres[assign] + args.spread * noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        data[start:end] = block
    np.save(args.out, data)
    print(json.dumps({"rows": args.rows, "dim": args.dim, "clusters": args.clusters, "out": args.out}))


def search(args):
    import faiss

    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count()
    faiss.omp_set_num_threads(threads)
    load_started = time.perf_counter()
    data = np.load(args.data)
    load_s = time.perf_counter() - load_started
    started = time.perf_counter()
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    scores, ids = index.search(data, args.k + 1)
    search_s = time.perf_counter() - started
    # Remove self; where an exact duplicate outranks self, drop the extra last entry.
    rows = np.arange(len(data))[:, None]
    keep = ids != rows
    extra = keep.sum(axis=1) > args.k
    keep[extra, args.k] = False
    out_ids = ids[keep].reshape(len(data), args.k).astype(np.uint32)
    out_scores = scores[keep].reshape(len(data), args.k)
    np.save(args.ids_out, out_ids)
    np.save(args.scores_out, out_scores)
    print(json.dumps({"rows": len(data), "k": args.k, "threads": threads,
                      "load_s": round(load_s, 3), "search_s": round(search_s, 3)}))


def compare(args):
    data = np.load(args.data)
    ours_ids, ours_scores = np.load(args.ours_ids), np.load(args.ours_scores)
    faiss_ids = np.load(args.faiss_ids)
    if ours_ids.shape != faiss_ids.shape:
        sys.exit(f"shape mismatch: deepcuts {ours_ids.shape} vs faiss {faiss_ids.shape}")
    rows = len(data)
    self_listed = int((ours_ids == np.arange(rows, dtype=np.uint32)[:, None]).sum())
    unsorted = int((np.diff(ours_scores, axis=1) > 0).sum())
    differing = np.nonzero((ours_ids != faiss_ids).any(axis=1))[0]
    ties, unexplained, examples = 0, 0, []
    for row in differing:
        query = data[row].astype(np.float64)
        exact_ours = data[ours_ids[row]].astype(np.float64) @ query
        exact_faiss = data[faiss_ids[row]].astype(np.float64) @ query
        # Same sorted exact scores: the lists differ only in the order or
        # choice among tracks that score the same, i.e. at true ties.
        gap = np.abs(np.sort(exact_ours) - np.sort(exact_faiss)).max()
        if gap <= args.tie_tolerance:
            ties += 1
        else:
            unexplained += 1
            if len(examples) < 5:
                examples.append({"row": int(row), "gap": float(gap),
                                 "deepcuts": ours_ids[row].tolist(), "faiss": faiss_ids[row].tolist()})
    report = {"rows": rows, "identical_rows": rows - len(differing), "tie_rows": ties,
              "unexplained_rows": unexplained, "self_listed": self_listed,
              "unsorted_pairs": unsorted, "examples": examples}
    print(json.dumps(report))
    if unexplained or self_listed or unsorted:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--rows", type=int, default=400_000)
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--clusters", type=int, default=2_000)
    g.add_argument("--spread", type=float, default=0.08)
    g.add_argument("--seed", type=int, default=20170101)
    s = sub.add_parser("search")
    s.add_argument("--data", required=True)
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--ids-out", required=True)
    s.add_argument("--scores-out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--data", required=True)
    c.add_argument("--ours-ids", required=True)
    c.add_argument("--ours-scores", required=True)
    c.add_argument("--faiss-ids", required=True)
    c.add_argument("--tie-tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    {"generate": generate, "search": search, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
