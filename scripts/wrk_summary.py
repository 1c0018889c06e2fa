#!/usr/bin/env python3
"""One `wrk --latency` run (its output on stdin) as one JSON line on stdout.

Usage: wrk ... --latency URL | python3 scripts/wrk_summary.py CASE TARGET CONNECTIONS

The line holds the case and target names, the connections, p50 and p99 latency in
ms (0 when nothing was answered), requests per second, the requests made, the
non-2xx answers and wrk's socket error line. The query benchmarks
(bench-query.sh, bench-floor.sh) read every wrk run through it.
"""
import json
import re
import sys

label, target, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = sys.stdin.read()
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
latency = dict((p, ms(v)) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", text, re.M))
latency = {"50": latency.get("50", 0.0), "99": latency.get("99", 0.0)}  # none answered: 0
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
requests = re.search(r"(\d+) requests in", text)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(json.dumps({"case": label, "target": target, "connections": connections,
    "p50_ms": round(latency["50"], 3), "p99_ms": round(latency["99"], 3),
    "requests_per_second": round(rps, 1), "requests": int(requests.group(1)) if requests else 0,
    "non_2xx": int(bad.group(1)) if bad else 0,
    "socket_errors": errors.group(1) if errors else ""}))
