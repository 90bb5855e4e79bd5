#!/usr/bin/env python3
"""CPU time of a process's threads between two snapshots.

  threads.py snap PID            prints one line per thread: TID TICKS (utime+stime)
  threads.py diff BEFORE AFTER SECONDS
                                 prints JSON {"total_pct", "busiest_pct", "threads"}: CPU used
                                 over SECONDS as % of one core, all threads and the busiest one.
Used by compare.sh to tell whether the target was the limit of a run (a saturated thread).
"""
import json
import os
import sys


def snap(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14 and 15 (utime, stime); rest starts at field 3.
        out.append((tid, int(rest[11]) + int(rest[12])))
    return out


def load(path):
    with open(path) as f:
        return {t: int(v) for t, v in (line.split() for line in f if line.strip())}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "snap":
        for tid, ticks in snap(sys.argv[2]):
            print(tid, ticks)
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "diff":
        before, after, secs = load(sys.argv[2]), load(sys.argv[3]), float(sys.argv[4])
        hz = os.sysconf("SC_CLK_TCK")
        used = [(after[t] - before.get(t, 0)) / hz for t in after]
        total = sum(used)
        busiest = max(used, default=0.0)
        print(json.dumps({"total_pct": round(100 * total / secs, 1), "busiest_pct": round(100 * busiest / secs, 1),
                          "threads": len(after)}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
