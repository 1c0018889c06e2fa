#!/usr/bin/env python3
"""Quantiles of the observations a Prometheus histogram gained between two
scrapes, as Prometheus' histogram_quantile computes them (linear within the
bucket that holds the rank). For the benchmark scripts.

Usage: histogram_summary.py BEFORE AFTER
BEFORE and AFTER are the histogram's `le count` pairs, one per line (as
`histogram_buckets` in scripts/lib.sh prints them); BEFORE may be empty (then
every observation counts). Prints one JSON object: observations, p50, p99, the
upper bound of the highest bucket that gained observations (`maxBucket`: what
the largest observation is at most), and the share within 1 s and 2 s where
the histogram has those edges.
"""
import json
import math
import sys


def buckets(text):
    pairs = [line.split() for line in text.splitlines() if line.strip()]
    return [(math.inf if le == "+Inf" else float(le), int(count)) for le, count in pairs]


def quantile(q, counts):
    rank = q * counts[-1][1]
    lower_bound, lower_count = 0.0, 0
    for upper_bound, count in counts:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            share = (rank - lower_count) / max(count - lower_count, 1)
            return lower_bound + (upper_bound - lower_bound) * share
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def summary(before_text, after_text):
    after = buckets(after_text)
    before = buckets(before_text) or [(le, 0) for le, _ in after]
    counts = [(le, count - previous) for (le, count), (_, previous) in zip(after, before)]
    total = counts[-1][1] if counts else 0
    result = {"observations": total}
    if total == 0:
        return result
    result["p50"] = round(quantile(0.5, counts), 3)
    result["p99"] = round(quantile(0.99, counts), 3)
    highest, previous = 0.0, 0
    for le, count in counts:
        if count > previous:
            highest = le
        previous = count
    result["maxBucket"] = "+Inf" if math.isinf(highest) else highest
    for le, count in counts:
        if le in (1.0, 2.0):
            result[f"within{le:g}s"] = round(count / total, 4)
    return result


if __name__ == "__main__":
    print(json.dumps(summary(sys.argv[1], sys.argv[2])))
