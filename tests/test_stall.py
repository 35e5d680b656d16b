#!/usr/bin/env python3
"""test_stall.py DATA.h5 MODEL.h5: `ccq search --resume auto` and the stall watchdog, the two pieces a
requeued cluster job stands on.

--resume auto: with no checkpoint it starts; run again on the finished search it says so, exits 0
and rewrites nothing (same bytes, same modification times); stopped by SIGUSR1 sent to mpirun (Open MPI;
under another MPI to rank 0) (exit 7) and run
again with the same command it ends bit-identical to the uninterrupted run; a checkpoint of another
search is refused (exit 5, one line, the checkpoint untouched); a raised run.budget continues.
The watchdog (run.stall_timeout): a 2-rank search whose rank 1 is frozen (SIGSTOP) in the middle of
the run ends within the bound plus a few seconds with exit 8 and one line from rank 0 naming the
generation and rank 1; the checkpoint it leaves resumes (--resume auto) to the uninterrupted result;
the watchdog on and off give the same files."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ccqtest import Checks, ccq_binary, rank_pids, run, search_ini

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("stall")
MPI = ["mpirun", "--oversubscribe", "-np"]
NAMES = ("out.h5", "log.jsonl", "ckpt.h5")
OPEN_MPI = "Open MPI" in run(["mpirun", "--version"])[1]


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in NAMES}


def search(cfg, np_=2, extra=(), **kw):
    return run(MPI + [str(np_), ccq, "search", cfg, *extra], **kw)


def start(cfg, np_=2, extra=()):
    return subprocess.Popen(MPI + [str(np_), ccq, "search", cfg, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(d, proc, timeout=60):
    t0 = time.time()
    while not os.path.exists(os.path.join(d, "ckpt.h5")) and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    return proc.poll() is None


with tempfile.TemporaryDirectory() as tmp:
    budget = {"run": {"budget": 800}}
    # the reference: uninterrupted, watchdog off
    ref = os.path.join(tmp, "ref")
    rc, so, se = search(search_ini(ref, model, data, run={"budget": 800, "stall_timeout": "off"}))
    t.check("reference runs", rc == 0, se)
    want = files(ref)

    # --resume auto from nothing, then on the finished search
    a = os.path.join(tmp, "auto")
    cfg = search_ini(a, model, data, **budget)
    rc, so, se = search(cfg, extra=["--resume", "auto"])
    t.check("auto without a checkpoint starts", rc == 0 and "--resume auto: no" in so, (rc, se))
    t.check("auto start = reference (watchdog on and off give the same files)", files(a) == want)
    before = {n: os.stat(os.path.join(a, n)).st_mtime_ns for n in NAMES}
    rc, so, se = search(cfg, extra=["--resume", "auto"])
    t.check("auto on a complete search: exit 0, says so", rc == 0 and "nothing to do" in so, (rc, so[-300:], se))
    t.check("auto on a complete search rewrites nothing",
            files(a) == want and before == {n: os.stat(os.path.join(a, n)).st_mtime_ns for n in NAMES})

    # a raised budget continues from the complete checkpoint like an explicit resume
    rc, so, se = search(cfg, extra=["--resume", "auto", "--set", "run.budget=1000"])
    more = files(a)
    r2 = os.path.join(tmp, "ref2")
    rc2, _, se2 = search(search_ini(r2, model, data, run={"budget": 1000}))
    t.check("auto with a raised budget continues", rc == 0 and rc2 == 0 and "continuing from" in so, (se, se2))
    t.check("... to the uninterrupted longer run", more == files(r2))

    # SIGUSR1 to mpirun (which forwards it to every rank; SIGTERM it answers by killing the job),
    # then the same command again
    b = os.path.join(tmp, "stop")
    cfg = search_ini(b, model, data, **budget)
    p = start(cfg, extra=["--resume", "auto"])
    if wait_for_checkpoint(b, p):
        if OPEN_MPI:
            p.send_signal(signal.SIGUSR1)
        else:  # MPICH's Hydra forwards it too, but then returns 0 about one time in seven (its race)
            for pid in rank_pids(p.pid, 0):
                os.kill(pid, signal.SIGUSR1)
    so, se = p.communicate(timeout=120)
    t.check("SIGUSR1: exit 7 after a checkpoint", p.returncode == 7 and "stopped on request" in se,
            (p.returncode, se))
    rc, so, se = search(cfg, extra=["--resume", "auto"])
    t.check("auto after the stop ends identical", rc == 0 and files(b) == want, (rc, se))

    # another search's checkpoint: refused, untouched
    c = os.path.join(tmp, "other")
    shutil.copytree(ref, c)
    cfg = search_ini(c, model, data, search={"seed": 4}, **budget)
    ck = open(os.path.join(c, "ckpt.h5"), "rb").read()
    rc, so, se = search(cfg, extra=["--resume", "auto"])
    lines = [ln for ln in se.splitlines() if ln.startswith("ccq:")]
    t.check("auto on another search's checkpoint: exit 5, one line", rc == 5 and len(lines) == 1 and
            "different configuration" in lines[0], (rc, se))
    t.refusal("--resume auto: another search's checkpoint")
    t.check("... the checkpoint untouched", open(os.path.join(c, "ckpt.h5"), "rb").read() == ck)

    # a bad value of the key
    rc, so, se = search(cfg, np_=1, extra=["--set", "run.stall_timeout=soon"])
    t.check("stall_timeout=soon: exit 2 naming the key", rc == 2 and "run.stall_timeout" in se, (rc, se))
    t.refusal("run.stall_timeout=soon")

    # the watchdog: rank 1 frozen after the first checkpoint
    w = os.path.join(tmp, "stall")
    bound = 3
    cfg = search_ini(w, model, data, run={"budget": 800, "stall_timeout": bound})
    p = start(cfg)
    frozen = []
    if wait_for_checkpoint(w, p):
        frozen = rank_pids(p.pid, 1)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        so, se = p.communicate(timeout=bound + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        so, se = p.communicate()
    took = time.time() - t0
    for pid in frozen:  # whatever mpirun left
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t.check("rank 1 found and frozen", len(frozen) == 1, frozen)
    t.check(f"stalled job ends within the bound ({bound} s) + 20 s", took < bound + 20, took)
    t.check("exit 8", p.returncode == 8, (p.returncode, se[-500:]))
    named = [ln for ln in se.splitlines() if "search stalled in generation" in ln and "no answer from rank 1 " in ln]
    t.check("rank 0's line names the generation and rank 1", len(named) == 1, se[-800:])
    rc, so, se = search(cfg, extra=["--resume", "auto"])
    t.check("the stalled job's checkpoint resumes to the uninterrupted result", rc == 0 and files(w) == want,
            (rc, se))

t.finish()
