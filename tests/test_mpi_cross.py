#!/usr/bin/env python3
"""test_mpi_cross.py DATA.h5 MODEL.h5: checkpoints cross MPI implementations.

Two builds of ccq, each linked against another MPI (scripts/test_mpich.sh: build-mpich/ with MPICH,
and build/ with Open MPI), each run by its own launcher: CCQ_BIN and CCQ_MPIEXEC (this build's),
CCQ_OTHER_BIN and CCQ_OTHER_MPIEXEC (the other's; tests/CMakeLists.txt sets them and generates the
launchers, which take `--oversubscribe -np N`), CCQ_MPI and CCQ_OTHER_MPI name the two MPIs.

The small search of ccqtest.search_ini (test_search.py's: 2-bit lenet, first/last 8-bit, here with
a budget of 240) must give the same final model, log and checkpoint byte for byte under either MPI
on 2 ranks. Then, both ways: stopped under one MPI by SIGTERM to every rank once its first
checkpoint exists (exit 7, mid-way) and resumed under the other on 3 ranks; and run to half its
budget under one and continued under the other (--set run.budget) on 2 ranks: each ends
byte-identical to the uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from ccqtest import Checks, ccq_binary, rank_pids, run, search_ini

data, model = sys.argv[1], sys.argv[2]
t = Checks("mpi_cross")
here = (os.environ.get("CCQ_MPI", "this"), ccq_binary(), os.environ.get("CCQ_MPIEXEC", "mpirun"))
other_bin = os.environ.get("CCQ_OTHER_BIN", "")
if not other_bin or not os.path.exists(other_bin):
    sys.exit(f"CCQ_OTHER_BIN must point at the other MPI's ccq binary (got {other_bin!r}); "
             "scripts/test_mpich.sh builds both")
other = (os.environ.get("CCQ_OTHER_MPI", "other"), other_bin, os.environ["CCQ_OTHER_MPIEXEC"])
t.check("two MPIs", here[0] != other[0], f"{here[0]} and {other[0]}")
BUDGET = 240


def setup(d, budget=BUDGET):
    return search_ini(d, model, data, run={"budget": budget})


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() if os.path.exists(os.path.join(d, n)) else None
            for n in ("out.h5", "log.jsonl", "ckpt.h5")}


def cmd(mpi, np_, cfg, extra=()):
    _, binary, launcher = mpi
    return [launcher, "--oversubscribe", "-np", str(np_), binary, "search", cfg, *extra]


def ranks_of(proc, np_, timeout=60.0):
    """The pids of the np_ ranks the launcher started (rank_pids: any depth, Open MPI or MPICH)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        found = [pid for r in range(np_) for pid in rank_pids(proc.pid, r)]
        if len(found) == np_:
            return found
        time.sleep(0.02)
    return None


def stop_with_sigterm(mpi, d):
    """Runs under mpi on 2 ranks; once the first checkpoint exists, SIGTERM to every rank (as Slurm's
    scancel does). Returns (launcher exit code, stderr, configuration)."""
    cfg = setup(d)
    p = subprocess.Popen(cmd(mpi, 2, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    pids = ranks_of(p, 2)
    for _ in range(1200):
        if os.path.exists(os.path.join(d, "ckpt.h5")) or p.poll() is not None:
            break
        time.sleep(0.05)
    for pid in pids or []:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        _, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        err += "\n(test: killed after 300 s)"
    return p.returncode, err, cfg


with tempfile.TemporaryDirectory() as root:
    # uninterrupted, under each MPI (2 ranks)
    ref = {}
    for mpi in (other, here):
        d = os.path.join(root, f"ref_{mpi[0]}")
        rc, so, se = run(cmd(mpi, 2, setup(d)), timeout=600)
        t.check(f"{mpi[0]}: uninterrupted search on 2 ranks runs", rc == 0, se[-2000:])
        ref[mpi[0]] = files(d)
    base = ref[other[0]]
    t.check("the reference run wrote its files", all(v for v in base.values()))
    last_gen = json.loads(base["log.jsonl"].decode().splitlines()[-1])["gen"] if base["log.jsonl"] else 0
    for n in base:
        t.check(f"uninterrupted: {n} identical under {here[0]} and {other[0]}", ref[here[0]][n] == base[n])

    for a, b in ((other, here), (here, other)):
        # SIGTERM under a, resume under b on 3 ranks
        d = os.path.join(root, f"term_{a[0]}_{b[0]}")
        rc, err, cfg = stop_with_sigterm(a, d)
        stopped = rc == 7 and "stopped on request" in err
        t.check(f"{a[0]}: SIGTERM to every rank: exit 7, checkpoint written", stopped, f"rc={rc} {err[-1500:]}")
        m = re.search(r"stopped on request at generation (\d+)", err)
        if m:
            print(f"test_mpi_cross: stopped under {a[0]} at generation {m.group(1)} of {last_gen}")
            t.check(f"{a[0]}: stopped mid-way", 0 < int(m.group(1)) < last_gen, m.group(0))
        if stopped:
            rc, so, se = run(cmd(b, 3, cfg, ["--resume", os.path.join(d, "ckpt.h5")]), timeout=600)
            t.check(f"stopped under {a[0]}, resumed under {b[0]} on 3 ranks: runs", rc == 0, se[-2000:])
            got = files(d)
            for n in base:
                t.check(f"stopped under {a[0]}, resumed under {b[0]}: {n} identical", got[n] == base[n])

        # half the budget under a, the rest under b (2 ranks each)
        d = os.path.join(root, f"half_{a[0]}_{b[0]}")
        cfg = setup(d, budget=BUDGET // 2)
        rc, so, se = run(cmd(a, 2, cfg), timeout=600)
        t.check(f"{a[0]}: half-budget search runs", rc == 0, se[-2000:])
        rc, so, se = run(cmd(b, 2, cfg, ["--resume", os.path.join(d, "ckpt.h5"), "--set", f"run.budget={BUDGET}"]),
                         timeout=600)
        t.check(f"half under {a[0]}, continued under {b[0]}: runs", rc == 0, se[-2000:])
        got = files(d)
        for n in base:
            t.check(f"half under {a[0]}, continued under {b[0]}: {n} identical", got[n] == base[n])
t.finish()
