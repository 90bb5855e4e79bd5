#!/usr/bin/env python3
"""The Markdown table and goal verdicts of bench/links-compare.sh, from its raw.jsonl.

  links_table.py RAW [RAW...] [--runs N --time S --warmup S --links N --commit C --dirty N --started T
                      --features "from=.. local=.. weights=.."]

A line of RAW is either a setup ({"kind": "setup", "rates_bits", "mtu", "iperf_read",
"iperf_write"}) or one run of one row ({"kind": "ours"|"fio", "setup", "target", "workload", "row",
"policy", "conns", "run", "data", "target_cpu", "foreign", "load1"}).

The links' sum is what TCP can carry over the tbf-limited links: tbf counts whole Ethernet frames
(MTU + 14 bytes of header), of which MTU - 52 (IPv4 20, TCP with timestamps 32) is payload, so a
1 Gbit/s link carries 1e9 / 8 / 2^20 * 1448 / 1514 = 114.0 MiB/s of payload at MTU 1500. iSCSI's
own headers (48 bytes per PDU of up to 256 KiB) are left out: under 0.1 % at 1 MiB.
"""
import argparse
import json
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fio_json import figures as fio_figures  # noqa: E402

MIB = 1 << 20
WORKLOADS = {"seq-read": "1 MiB sequential read", "seq-write": "1 MiB sequential write",
             "rand-read-qd32": "4 KiB random read"}
GOAL_SUM = 0.9         # N-connection session >= 0.9 x the links' sum on 1 MiB reads and writes
GOAL_PEER = 1.0        # >= 1.0 x libiscsi's N sessions
GOAL_UNEQUAL = 1.3     # on unequal links, weighted and least-queue-depth >= 1.3 x round-robin


def payload_mib_s(bits, mtu):
    """TCP payload MiB/s a tbf link of `bits` per second carries at this MTU."""
    return bits / 8 / MIB * (mtu - 52) / (mtu + 14)


def load_json(path):
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        return None


def iperf_mib_s(path):
    d = load_json(path)
    try:
        return d["end"]["sum_received"]["bits_per_second"] / 8 / MIB
    except (KeyError, TypeError):
        return None


def per_connection(d):
    """MiB/s per connection over the measured part of `rsiscsi bench --json`'s timeline (phase
    "run"; each entry covers the time since the one before, so entries are weighted by it), or
    None when the build has no timeline."""
    tl = d.get("timeline") if isinstance(d, dict) else None
    if not isinstance(tl, list):
        return None
    sums, secs, prev = [], 0.0, None
    for e in tl:
        if not isinstance(e, dict) or not isinstance(e.get("t"), (int, float)):
            continue
        t, pc = e["t"], e.get("per_connection_mib_s")
        if prev is not None and e.get("phase") == "run" and isinstance(pc, list):
            dt = t - prev
            sums += [0.0] * (len(pc) - len(sums))
            for i, x in enumerate(pc):
                sums[i] += x * dt
            secs += dt
        prev = t
    return [x / secs for x in sums] if secs > 0 else None


def ours(d):
    if not isinstance(d, dict) or "bw_mib_s" not in d:
        return None
    # Nothing completed (a stalled run reports 0 MiB/s and no errors): no figure, not a zero.
    if not d.get("iops"):
        return None
    p99 = (d.get("lat_us") or {}).get("p99")
    return {"bw": d["bw_mib_s"], "iops": d["iops"], "cpu": d.get("cpu_s_per_gib"), "errors": d.get("errors", 0),
            "p99": p99 / 1000 if p99 is not None else None, "conns_mib_s": per_connection(d)}


def med(vals, k):
    xs = [v[k] for v in vals if v.get(k) is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def fr(x):
    return "n/a" if x is None else f"{x:.2f}"


def label(row, policy, conns):
    return {"libiscsi-1": "libiscsi, 1 session, link 1",
            "libiscsi-N": f"libiscsi, {conns} sessions, 1 per link",
            "rsiscsi-1": "rsiscsi, 1 connection, link 1",
            "rsiscsi-N": f"rsiscsi, 1 session of {conns} connections, {policy}"}.get(row, row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="+", help="raw.jsonl of one or more runs of links-compare.sh")
    ap.add_argument("--runs", default="?")
    ap.add_argument("--time", default="?")
    ap.add_argument("--warmup", default="?")
    ap.add_argument("--links", type=int, default=4)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--dirty", default="0")
    ap.add_argument("--started", default="?")
    ap.add_argument("--features", default="")
    ap.add_argument("--built", default="?")
    a = ap.parse_args()

    setups, order, rows, attempts = {}, [], {}, {}
    lines = []
    for path in a.raw:
        with open(path) as f:
            lines += f.readlines()
    for seq, line in enumerate(lines):
        r = json.loads(line)
        r["seq"] = seq
        if r.get("kind") == "setup":
            setups[r["setup"]] = r
            continue
        key = (r["setup"], r["target"], r["workload"], r["row"], r.get("policy") or "")
        # A disturbed run is done again: only its last attempt counts.
        attempts.setdefault((key, r["run"]), []).append(r)
    for (key, run), tries in sorted(attempts.items(), key=lambda kv: kv[1][0]["seq"]):
        r = tries[-1]
        if key not in rows:
            rows[key] = {"runs": [], "conns": r["conns"], "tried": 0, "foreign": 0, "load": []}
            order.append(key)
        slot = rows[key]
        slot["tried"] += 1
        slot["redone"] = slot.get("redone", 0) + len(tries) - 1
        slot["foreign"] += 1 if r.get("foreign") else 0
        b, e = r.get("links_before") or "", r.get("links_after") or ""
        lost = "0" in b.split(":")[0] + e.split(":")[0] or b != e  # down, or flapped (carrier changes)
        slot["down"] = slot.get("down", 0) + (1 if lost else 0)
        slot["load"].append(r.get("load1"))
        if r["kind"] == "ours":
            v = ours(r["data"])
        else:
            fv = fio_figures(r["data"], jobs=r["conns"])
            # A session that failed (fio's first error) makes the group's figure a partial one.
            v = None if fv is None or fv["errors"] else {"bw": fv["bw"], "iops": fv["iops"], "cpu": fv["cpu"],
                                          "errors": fv["errors"], "p99": fv["p99"] / 1000,
                                          "conns_mib_s": None}
        if v is None:
            continue
        tc = r.get("target_cpu") or {}
        v["tbusy"], v["idle"] = tc.get("busiest_pct"), tc.get("host_idle_pct")
        slot["runs"].append(v)

    import subprocess
    now = subprocess.getoutput("date -u +%FT%TZ")
    loads = [x for s in rows.values() for x in s["load"] if x is not None]
    print(f"# MC/S over several links: rsiscsi against libiscsi (fio 3.33), {a.started} to {now}\n")
    print(f"Host: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; tree at {a.commit}"
          f"{' (+' + a.dirty + ' changed files)' if a.dirty not in ('', '0') else ''}; release binary built "
          f"{a.built}; rsiscsi bench options "
          f"found: {a.features}. Links lab (bench/links.sh): the root namespace (initiator) joined to the "
          f"target namespace by {a.links} veth links, each limited by tbf in both directions; tgt and istgt on "
          f"every link's target address, RAM-backed LUNs. {a.runs} runs per row, rows alternated (forward, "
          f"backward), {a.time} s measured after {a.warmup} s warm-up, first 1 GiB of the LUN. Medians. "
          f"1 MiB workloads at iodepth 16, 4 KiB random reads at iodepth 32, per connection or session (ours "
          f"N x that over one session). Host load (1-minute average at each run's start): median "
          f"{fmt(statistics.median(loads) if loads else None, 2)}, max {fmt(max(loads) if loads else None, 2)}.\n")
    print("Columns: **of links' sum** = MiB/s over the links' payload capacity (the tbf rates, 1448 of each "
          "1514 bytes on the wire being payload); **x 1 link** = over rsiscsi's one-connection row; "
          "**/ libiscsi N** = over libiscsi's N sessions; **CPU s/GiB** = the initiator's CPU (user + "
          "system) per GiB moved; **p99 ms** = 99th percentile completion latency (ours: issue to status; fio: "
          "clat); **target busiest %** = the target daemon's busiest thread, % of one core "
          "(tgtd does all iSCSI work on one thread); **host idle %** = both CPUs' idle share inside the "
          "measured window; **per-connection MiB/s** (ours, when `bench --json` has a timeline) = mean over "
          "the measured seconds of the median run.\n")

    verdicts = []
    for setup in [s for s in ("equal", "unequal") if s in setups] + [s for s in setups if s not in ("equal", "unequal")]:
        st = setups[setup]
        bits, mtus = st["rates_bits"], st["mtu"]
        caps = [payload_mib_s(b, m) for b, m in zip(bits, mtus)]
        total = sum(caps)
        rates = ", ".join(f"{b / 1e9:g} Gbit/s" if b >= 1e9 else f"{b / 1e6:g} Mbit/s" for b in bits)
        print(f"## {setup.capitalize()} links: {rates}\n")
        print(f"MTU {', '.join(str(m) for m in sorted(set(mtus)))}; payload capacity per link "
              f"{', '.join(fmt(c, 1) for c in caps)} MiB/s; links' sum **{fmt(total, 1)} MiB/s**.")
        for name, files in (("reads (target to initiator, -R)", st.get("iperf_read") or []),
                            ("writes (initiator to target)", st.get("iperf_write") or [])):
            got = [iperf_mib_s(p) for p in files]
            if got and all(g is not None for g in got):
                print(f"iperf3, one stream per link at once, {name}: {', '.join(fmt(g, 1) for g in got)} MiB/s, "
                      f"sum {fmt(sum(got), 1)} = {fr(sum(got) / total)} of the links' sum.")
            elif files:
                print(f"iperf3 {name}: n/a (a client failed)")
        if not (st.get("iperf_read") or st.get("iperf_write")):
            print("iperf3: not measured (no iperf3 server in the lab).")
        print()
        print("| target | workload | row | MiB/s | IOPS | of links' sum | x 1 link | / libiscsi N | CPU s/GiB | "
              "p99 ms | target busiest % | host idle % | per-connection MiB/s | runs |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        per_run = []
        for key in [k for k in order if k[0] == setup]:
            _, t, wl, row, pol = key
            s = rows[key]
            vs = s["runs"]
            bw, iops, cpu = med(vs, "bw"), med(vs, "iops"), med(vs, "cpu")
            one = med(rows.get((setup, t, wl, "rsiscsi-1", ""), {"runs": []})["runs"], "bw")
            peer = med(rows.get((setup, t, wl, "libiscsi-N", ""), {"runs": []})["runs"], "bw")
            cap = caps[0] if s["conns"] == 1 or pol == "failover-only" else total
            # The median run's per-connection split (ours, when the timeline exists).
            split = "n/a"
            if vs and vs[0].get("conns_mib_s") is not None:
                srt = sorted(vs, key=lambda v: v["bw"])
                mid = srt[len(srt) // 2]
                if mid.get("conns_mib_s"):
                    split = " / ".join(fmt(x) for x in mid["conns_mib_s"])
            tb = med(vs, "tbusy")
            flag = " **target-bound**" if tb is not None and tb >= 95 else ""
            idle = med(vs, "idle")
            hflag = " **host-bound**" if idle is not None and idle < 5 else ""
            notes = f"{len(vs)}/{s['tried']}"
            if s["foreign"]:
                notes += f", {s['foreign']} with other iSCSI traffic on the links"
            if s.get("down"):
                notes += f", {s['down']} with a link down"
            if s.get("redone"):
                notes += f", {s['redone']} disturbed run(s) done again"
            print(f"| {t} | {wl} | {label(row, pol, s['conns'])} | {fmt(bw)} | {fmt(iops)} | {fr(ratio(bw, total))} "
                  f"| {fr(ratio(bw, one))} | {fr(ratio(bw, peer)) if row.endswith('-N') else '-'} | {fmt(cpu, 3)} "
                  f"| {fmt(med(vs, 'p99'), 1)} "
                  f"| {fmt(tb)}{flag} | {fmt(idle)}{hflag} | {split} | {notes} |")
            per_run.append(f"- {t} {wl} {label(row, pol, s['conns'])}: " + ", ".join(fmt(v['bw']) for v in vs)
                           + f" MiB/s (capacity of its links {fmt(cap, 1)}: {fr(ratio(bw, cap))})")
        print("\nPer-run MiB/s:\n")
        print("\n".join(per_run))
        print()

        # Goals of issue 19.
        for t in sorted({k[1] for k in order if k[0] == setup}):
            for wl in ("seq-read", "seq-write"):
                def bw_of(row, pol=""):
                    return med(rows.get((setup, t, wl, row, pol), {"runs": []})["runs"], "bw")
                one, peer, rr = bw_of("rsiscsi-1"), bw_of("libiscsi-N"), bw_of("rsiscsi-N", "round-robin")
                pols = ["round-robin", "least-queue-depth", "weighted"] if setup == "equal" else ["weighted", "least-queue-depth"]
                for pol in pols:
                    x = bw_of("rsiscsi-N", pol)
                    if x is None:
                        continue
                    n = a.links
                    verdicts.append(verdict(f"{setup} {t} {wl} {pol}: {fmt(x)} MiB/s = {fr(x / total)} x the links' sum "
                                            f"({fmt(total)})", x / total, GOAL_SUM))
                    if setup == "equal" and one:
                        verdicts.append(verdict(f"{setup} {t} {wl} {pol}: {fr(x / one)} x one link (rsiscsi, 1 connection)",
                                                x / one, GOAL_SUM * n))
                    if peer:
                        # Both at the links' ceiling: neither can be faster, the ratio is noise.
                        tie = x / peer < GOAL_PEER and x / peer >= 0.98 and x / total >= 0.97 and peer / total >= 0.97
                        verdicts.append(verdict(f"{setup} {t} {wl} {pol}: {fr(x / peer)} x libiscsi's {n} sessions "
                                                f"({fmt(peer)} MiB/s)", x / peer, GOAL_PEER, tie))
                    if setup == "unequal" and rr:
                        verdicts.append(verdict(f"{setup} {t} {wl} {pol}: {fr(x / rr)} x round-robin ({fmt(rr)} MiB/s)",
                                                x / rr, GOAL_UNEQUAL))
    print("## Verdicts (issue 19's goals)\n")
    met = sum(1 for v in verdicts if v.startswith("- MET"))
    tied = sum(1 for v in verdicts if v.startswith("- TIE"))
    print(f"{met} of {len(verdicts)} met, {tied} tied at the links' ceiling, {len(verdicts) - met - tied} missed.\n")
    print("\n".join(verdicts))


def verdict(text, value, goal, ceiling=False):
    """One goal's line. `ceiling`: both sides within 3 % of the links' sum and within 2 % of each
    other, so the links and not the initiators set both figures: a tie, not a miss."""
    if value >= goal:
        return f"- MET: {text}; goal >= {goal:.2f}"
    if ceiling:
        return f"- TIE at the links' ceiling: {text}; goal >= {goal:.2f} (both >= 0.97 of the links' sum)"
    near = " (within 1 % of the goal)" if value >= goal * 0.99 else ""
    return f"- MISSED: {text}; goal >= {goal:.2f}{near}"


if __name__ == "__main__":
    sys.exit(main())
