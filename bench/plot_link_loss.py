#!/usr/bin/python3
"""Throughput over time during the loss of one link (issue 19 point 5).

Reads the JSON files bench/link-loss.sh writes (one per read/write run: the
`rsiscsi bench --json` object with its per-second `timeline`, the moments the
link went down and up on the bench's clock, and the links' rates) and draws
one panel per run: the session's MiB/s and each connection's, the link-down
span shaded, and the links' sum and (N-1)/N of it as reference lines.

Usage: plot_link_loss.py -o OUT.png RESULT.json [RESULT.json ...]
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        d = json.load(f)
    for key in ("bench", "link_down_t", "link_up_t", "link", "link_rates_bits"):
        if key not in d:
            raise SystemExit(f"{path}: no '{key}': not a bench/link-loss.sh result")
    if not d["bench"].get("timeline"):
        raise SystemExit(f"{path}: the bench JSON has no timeline (rsiscsi too old?)")
    return d


def conn_label(path, i):
    local = (path or {}).get("local_address", "?").rsplit(":", 1)[0]
    lead = ", leading" if (path or {}).get("leading") else ""
    return f"connection {i + 1} (from {local}{lead})"


def panel(ax, d):
    b = d["bench"]
    tl = b["timeline"]
    ts = [e["t"] for e in tl]
    total = [e["mib_s"] for e in tl]
    ncon = max((len(e.get("per_connection_mib_s") or []) for e in tl), default=0)
    paths = b.get("paths") or []
    for i in range(ncon):
        ys = [(e.get("per_connection_mib_s") or [0] * ncon)[i] if i < len(e.get("per_connection_mib_s") or []) else 0
              for e in tl]
        ax.plot(ts, ys, drawstyle="steps-pre", linewidth=1, alpha=0.8,
                label=conn_label(paths[i] if i < len(paths) else None, i))
    ax.plot(ts, total, drawstyle="steps-pre", linewidth=2.4, color="black", label="session (sum)")
    # Line rates as payload MiB/s (TCP/IP and iSCSI headers left in: an upper bound).
    rates = d["link_rates_bits"]
    full = sum(rates) / 8 / 2**20
    lost = (sum(rates) - rates[d["link"] - 1]) / 8 / 2**20
    ax.axhline(full, color="tab:green", linestyle=":", linewidth=1.2, label=f"links' sum, line rate ({full:.0f} MiB/s)")
    ax.axhline(lost, color="tab:red", linestyle=":", linewidth=1.2,
               label=f"without link {d['link']}, line rate ({lost:.0f} MiB/s)")
    down, up = d["link_down_t"], d["link_up_t"]
    ax.axvspan(down, up, color="tab:red", alpha=0.08)
    ax.axvline(down, color="tab:red", linestyle="--", linewidth=1.2)
    ax.axvline(up, color="tab:green", linestyle="--", linewidth=1.2)
    top = max(full, max(total, default=0)) * 1.12
    ax.text(down, top * 0.97, f" link {d['link']} down\n t={down:.1f} s", color="tab:red", va="top", fontsize=8)
    ax.text(up, top * 0.97, f" link {d['link']} up\n t={up:.1f} s", color="tab:green", va="top", fontsize=8)
    errs = sum(e.get("errors", 0) for e in tl)
    if d.get("link_rates_bits_after", rates) != rates:
        ax.text(0.5, 0.5, "link rates changed during this run: not valid", transform=ax.transAxes,
                ha="center", color="tab:red", fontsize=14, alpha=0.6)
    lead = " (the leading connection's)" if d["link"] == 1 else ""
    if len(set(rates)) == 1:
        links = f"{len(rates)} links of {rates[0] / 1e9:g} Gbit/s"
    else:
        links = f"links of {', '.join(f'{r / 1e9:g}' for r in rates)} Gbit/s"
    ax.set_title(f"{d['target']} {d['rw']}: {links}, 1 MiB, "
                 f"iodepth {b.get('iodepth')}, {d.get('policy', '?')}; link {d['link']}{lead} lost; "
                 f"{b.get('bw_mib_s', 0):.0f} MiB/s average, {errs} errors", fontsize=9)
    ax.set_ylim(0, top)
    ax.set_xlim(0, max(ts, default=1))
    ax.set_ylabel("MiB/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("results", nargs="+", help="bench/link-loss.sh JSON results")
    a = p.parse_args()
    runs = [load(r) for r in a.results]
    fig, axes = plt.subplots(len(runs), 1, figsize=(13, 3.8 * len(runs)), squeeze=False)
    for ax, d in zip(axes[:, 0], runs):
        panel(ax, d)
    axes[-1, 0].set_xlabel("seconds since the bench started (per-second timeline of rsiscsi bench --json)")
    first = runs[0]
    fig.suptitle(f"rsiscsi: one MC/S session over {first['links']} rate-limited links, one lost and brought back "
                 f"({first.get('date', '')}, {first.get('commit', '')})", fontsize=11)
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
