#!/usr/bin/env python3
"""plot_walltime.py OUT.png RECORD_DIR[=LABEL]...: search records (results/search_runs/NAME, as
scripts/search_record.sh writes them) against wall-clock. Left: the context's validation
cross-entropy at each validation (log.jsonl) at the loop's elapsed time for that generation
(log.jsonl.time). Right: test accuracy of every snapshot the record's `result` lists (the model
the search would ship at that generation), at the same clock; the axis starts just below the first
snapshot after the start. Also prints, per record, the
best validation reached by a quarter, half, three quarters and all of the shortest record's
wall-clock (the same times for every record), for the tables in results/."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(d):
    try:
        log = [json.loads(l) for l in open(os.path.join(d, "log.jsonl")) if l.strip()]
        tim = {r["gen"]: r["elapsed"] for r in (json.loads(l) for l in open(os.path.join(d, "log.jsonl.time")) if l.strip())}
        result = open(os.path.join(d, "result")).read()
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"plot_walltime: {d}: {e}")
    val = [(tim[r["gen"]], r["val"], r["gen"]) for r in log if "val" in r and r["gen"] in tim]
    snaps = []
    for line in result.splitlines():
        if line.startswith("snapshots"):
            snaps = json.loads(line.split(":", 1)[1])
    # gen 0 is the start, before the loop's clock
    snap_t = [(0.0 if g == 0 else tim.get(g), a) for g, a in snaps if g == 0 or g in tim]
    return log, tim, val, snap_t, result


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot_walltime.py OUT.png RECORD_DIR[=LABEL]...")
    fig, (av, aa) = plt.subplots(1, 2, figsize=(13, 4.8))
    records = []
    for arg in sys.argv[2:]:
        d, _, label = arg.partition("=")
        records.append((label or os.path.basename(d.rstrip("/")), *load(d)))
    shortest = min(max(r[2].values()) for r in records if r[2])
    for label, log, tim, val, snap_t, result in records:
        if val:
            av.plot([v[0] for v in val], [v[1] for v in val], marker="o", ms=3, label=label)
        if snap_t:
            aa.step([s[0] for s in snap_t], [s[1] for s in snap_t], where="post", marker="o", ms=3, label=label)
        end = max(tim.values()) if tim else 0
        best = min(val, key=lambda v: v[1]) if val else None
        kept = [l for l in result.splitlines() if l.startswith("test accuracy")]
        print(f"{label}: {log[-1]['gen']} generations, {log[-1].get('evaluations', 0)} evaluations in {end:.1f} s; "
              f"best validation {best[1]:.4f} at {best[0]:.0f} s (gen {best[2]}); {kept[0] if kept else ''}")
        line = []
        for T in (0.25 * shortest, 0.5 * shortest, 0.75 * shortest, shortest):
            seen = [v[1] for v in val if v[0] <= T]
            acc = [a for t, a in snap_t if t is not None and t <= T]
            line.append(f"by {T:.0f} s: val {min(seen):.4f}, kept {acc[-1]:.2f}%" if seen and acc else f"by {T:.0f} s: -")
        print("  " + "; ".join(line))
    # the start (gen 0) far below would flatten the curves: shown as a step from below the axis
    later = [a for r in records for t, a in r[4] if t]
    if later:
        aa.set_ylim(bottom=min(later) - 0.3)
    av.set_xlabel("search wall-clock (s)")
    av.set_ylabel("validation cross-entropy (nats/image)")
    aa.set_xlabel("search wall-clock (s)")
    aa.set_ylabel("test accuracy of the model kept (%)")
    for a in (av, aa):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1], dpi=110)


if __name__ == "__main__":
    main()
