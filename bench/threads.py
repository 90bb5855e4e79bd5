#!/usr/bin/env python3
"""CPU time of a process's threads between two snapshots.

  threads.py snap PID            prints one line per thread: TID TICKS (utime+stime)
  threads.py host                prints the whole host's ticks so far: host IDLE TOTAL
  threads.py diff BEFORE AFTER SECONDS [HOST-BEFORE HOST-AFTER [WIN-BEFORE WIN-AFTER]]
                                 prints JSON {"total_pct", "busiest_pct", "threads",
                                 "host_idle_pct", "window_cores"}: CPU used over SECONDS as % of
                                 one core, all threads and the busiest one; the host's idle share
                                 of all its CPUs between the two host snapshots (null without
                                 them); and the cores the process used between the two WIN
                                 snapshots of its threads, taken with the host ones (null
                                 without). With WIN snapshots the busiest thread is the busiest
                                 between them: a thread born and gone between BEFORE and AFTER
                                 (istgt runs two per connection) is invisible to those.
Used by compare.sh to tell whether the target was the limit of a run (a saturated thread), or the
host (no idle CPU left: initiator, target and the kernel's work for both share the same CPUs).
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


def host():
    """Idle (idle + iowait) and all ticks of all CPUs so far."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    return ticks[3] + ticks[4], sum(ticks[:8])


def load(path):
    """Per-thread ticks, and the host line's (idle, total) when present."""
    threads, host_ticks = {}, None
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 3 and p[0] == "host":
                host_ticks = (int(p[1]), int(p[2]))
            elif len(p) == 2:
                threads[p[0]] = int(p[1])
    return threads, host_ticks


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "snap":
        for tid, ticks in snap(sys.argv[2]):
            print(tid, ticks)
        return 0
    if len(sys.argv) == 2 and sys.argv[1] == "host":
        print("host", *host())
        return 0
    if len(sys.argv) in (5, 7, 9) and sys.argv[1] == "diff":
        (before, _), (after, _), secs = load(sys.argv[2]), load(sys.argv[3]), float(sys.argv[4])
        h0 = h1 = w0 = w1 = None
        if len(sys.argv) >= 7:
            try:
                h0, h1 = load(sys.argv[5])[1], load(sys.argv[6])[1]
            except OSError:
                pass
        if len(sys.argv) == 9:
            try:
                w0, w1 = load(sys.argv[7])[0], load(sys.argv[8])[0]
            except OSError:
                pass
        hz = os.sysconf("SC_CLK_TCK")
        used = [(after[t] - before.get(t, 0)) / hz for t in after]
        total = sum(used)
        busiest = max(used, default=0.0)
        idle = cores = None
        if h0 and h1 and h1[1] > h0[1]:
            idle = round(100 * (h1[0] - h0[0]) / (h1[1] - h0[1]), 1)
            if w0 is not None and w1 is not None:
                # The host's ticks count every CPU: elapsed seconds = ticks / (CPUs * hz).
                elapsed = (h1[1] - h0[1]) / ((os.cpu_count() or 1) * hz)
                window = [(w1[t] - w0.get(t, 0)) / hz for t in w1]
                cores = round(sum(window) / elapsed, 3)
                # Threads that live only while a connection does (istgt's) are
                # missing from BEFORE and AFTER, so the window's busiest counts.
                busiest = max(window, default=0.0) * secs / elapsed
        print(json.dumps({"total_pct": round(100 * total / secs, 1), "busiest_pct": round(100 * busiest / secs, 1),
                          "threads": len(after), "host_idle_pct": idle, "window_cores": cores}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
