#!/usr/bin/env python3
"""test_slurm.py DATA.h5 MODEL.h5: scripts/slurm/search.sbatch on a real (local, one-node) Slurm.

Starts the cluster of scripts/slurm/local_cluster.sh in a folder and on a port of its own
(build/slurm-test, 6837; stopped at the end whatever happens), runs a small search (2-bit lenet,
1000 generations) once without Slurm on 2 ranks as the reference, then submits the same search
with search.sbatch on 1 rank under a one-minute time limit whose warning (--signal=B:USR1@25) comes
long before it, so that allocations are cut by the time limit's warning; once, at a seeded random
moment of the allocation after the second such cut, the test pre-empts the job (`scontrol requeue
JOBID`). Asserts: the job ran at least 3 allocations (its output's `start N` lines and Slurm's
restart count), at least 2 ended by the time limit's warning with ccq's exit 7 and the script's own
requeue, one more ended by the pre-emption, every later allocation resumed with `--resume auto`, the
job ended COMPLETED with exit 0, and the final model, log and checkpoint are byte-identical to the
uninterrupted run's. CCQ_TEST_SEED repeats the pre-emption's moment.

Slurm checks time limits every 30 s (slurmctld's fixed period), not to the second: the warning
comes at the first check at least 60 - 25 - 30 = 5 s into the allocation. So that the search need
not be long, the test first learns when the checks happen (a probe job that ends at its warning,
run while the reference computes) and submits the job 9 to 16 s before a check: the first allocation
is cut after that long, and every allocation that follows a requeue by the script starts about 12 s
after a check (AuthInfo cred_expire=10) and is cut at the next one. The job runs on 1 rank and its
reference on 2 (the same result): an allocation then holds fewer generations, and the search can be
short. On an idle machine: about 30 s for the reference, 90 to 120 s for the job, 2.5 minutes in
all; on a busy one everything takes longer, with no fewer cuts."""
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

from ccqtest import Checks, ccq_binary, run, search_ini

data, model = sys.argv[1], sys.argv[2]
ccq = ccq_binary()
t = Checks("slurm")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "scripts", "slurm", "local_cluster.sh")
SBATCH = os.path.join(ROOT, "scripts", "slurm", "search.sbatch")
RANKS_REF, RANKS_JOB = 2, 1  # the job on 1 rank: slower, so fewer generations need to be searched
WARN = 25  # seconds before the one-minute limit: the warning comes 5-35 s into an allocation
PERIOD = 30  # slurmctld's time-limit check period
LEAD = (9, 16, 14)  # the job is submitted 9-16 s before a check (its start may lag by 4 s), else waits till 14 s
DEADLINE = 300  # seconds for the job, from its submission (about 90 on an idle machine)
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
seed = int(os.environ.get("CCQ_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
print(f"test_slurm: pre-emption seed {seed} (set CCQ_TEST_SEED to repeat)", flush=True)
rnd = random.Random(seed)

# a cluster of its own: a user's build/slurm cluster (default port 6817) is not touched
env = dict(os.environ)
env["CCQ_SLURM_DIR"] = env.get("CCQ_TEST_SLURM_DIR", os.path.join(ROOT, "build", "slurm-test"))
env["CCQ_SLURM_PORT"] = env.get("CCQ_TEST_SLURM_PORT", "6837")
env["SLURM_CONF"] = os.path.join(env["CCQ_SLURM_DIR"], "etc", "slurm.conf")
for k in list(env):
    if k.startswith("SLURM_") and k != "SLURM_CONF":  # run inside a Slurm job, it must not look like one
        del env[k]

BUDGET = int(os.environ.get("CCQ_TEST_SLURM_BUDGET", 10000))  # evaluations: about 1000 generations


def setup(d):
    """The small search of ccqtest.search_ini with a larger batch, so that a generation is long enough
    to be cut by Slurm's signals at any point of it."""
    return search_ini(d, model, data, search={"seed": 5, "batch": 1024, "confirm_batch": 512},
                      run={"checkpoint_every": 10, "budget": BUDGET})


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")}


def sh(cmd, timeout=60):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return -1, "", f"{cmd[0]}: no answer in {timeout} s"


def job_info(job):
    """scontrol's record of the job as a dict (empty once it is gone)."""
    rc, so, _ = sh(["scontrol", "-o", "show", "job", job], timeout=20)
    if rc != 0:
        return {}
    return dict(kv.split("=", 1) for kv in so.split() if "=" in kv)


def read(p):
    try:
        return open(p, errors="replace").read()
    except OSError:
        return ""


def starts_in(text):
    """The allocations' numbers (start N lines) in the job's output."""
    return {int(n) for n in re.findall(r"^search\.sbatch: \S+ job \d+ start (\d+): on ", text, re.M)}


class Stop(Exception):
    """Nothing further can be checked."""


started_cluster = False
jobs = []
try:
    # the cluster, fresh: stopped first if a run before left it up
    sh([CLUSTER, "stop"], timeout=120)
    t0 = time.monotonic()
    rc, so, se = sh([CLUSTER, "start"], timeout=120)
    started_cluster = True
    t.check("local cluster starts, node idle", rc == 0, se[-2000:])
    print(f"test_slurm: cluster up in {time.monotonic() - t0:.1f} s", flush=True)
    if rc != 0:
        raise Stop
    rc, so, se = sh([CLUSTER, "start"], timeout=120)
    t.check("a second start changes nothing", rc == 0 and "already running" in se and "started" not in se, se)
    rc, so, se = sh(["squeue", "-h", "-o", "%i"])
    for j in so.split():  # left in the cluster's state by an earlier run of this test that was killed
        print(f"test_slurm: cancelling job {j}, left by an earlier run", flush=True)
        sh(["scancel", j])
    for _ in range(60):
        if not sh(["squeue", "-h", "-o", "%i"])[1].strip():
            break
        time.sleep(1)

    with tempfile.TemporaryDirectory(prefix="ccq_slurm_") as root:
        # the probe: a job that ends at its time-limit warning, which comes at slurmctld's next check
        probe_out = os.path.join(root, "probe.out")
        rc, so, se = sh(["sbatch", "--parsable", "--job-name=ccq-test-probe", "--time=1", "--signal=B:USR1@59",
                         f"--output={probe_out}", "--wrap",
                         "trap 'echo check $(date +%s.%N); exit 0' USR1; sleep 100 & wait; wait"])
        t.check("sbatch accepts the probe job", rc == 0, se)
        if rc != 0:
            raise Stop
        jobs.append(so.strip().split(";")[0])

        # the reference: one uninterrupted run, no Slurm (meanwhile the probe waits for its check)
        ref = os.path.join(root, "ref")
        t0 = time.monotonic()
        rc, so, se = run(["mpirun", "--oversubscribe", "-np", str(RANKS_REF), ccq, "search", setup(ref)], env=env)
        t_ref = time.monotonic() - t0
        t.check("reference run", rc == 0, se[-2000:])
        gens = len(read(os.path.join(ref, "log.jsonl")).splitlines())
        print(f"test_slurm: reference run {t_ref:.1f} s on {RANKS_REF} ranks, {gens} generations", flush=True)

        check = None
        for _ in range(80):
            m = re.search(r"^check (\d+\.\d+)", read(probe_out), re.M)
            if m:
                check = float(m.group(1))
                break
            time.sleep(0.5)
        t.check("the probe saw slurmctld's time-limit check", check is not None, read(probe_out))
        if check is None:
            raise Stop
        # the probe gone (it holds a CPU), the next check at least LEAD[0] s away: now if it is at most
        # LEAD[1] s away, else LEAD[2] s before it
        while job_info(jobs[0]).get("JobState") not in (None, "COMPLETED", "FAILED", "CANCELLED"):
            time.sleep(0.2)
        now = time.time()
        nxt = check + PERIOD * math.ceil((now + LEAD[0] - check) / PERIOD)
        if nxt - now > LEAD[1]:
            time.sleep(nxt - LEAD[2] - now)

        # the same search as a Slurm job, cut by its time limit's warning, requeued by itself
        d = os.path.join(root, "slurm")
        cfg = setup(d)
        out = os.path.join(d, "job.out")
        rc, so, se = sh(["sbatch", "--parsable", "--job-name=ccq-test-slurm", f"--ntasks={RANKS_JOB}", "--time=1",
                         f"--signal=B:USR1@{WARN}", f"--output={out}", f"--chdir={d}",
                         f"--export=ALL,CCQ_ROOT={ROOT},CCQ_BIN={ccq}", SBATCH, cfg])
        t.check("sbatch accepts the job", rc == 0, se)
        if rc != 0:
            raise Stop
        job = so.strip().split(";")[0]
        jobs.append(job)
        t_sub = time.monotonic()
        print(f"test_slurm: job {job} submitted {PERIOD - (time.time() - check) % PERIOD:.1f} s before a "
              "time-limit check", flush=True)

        # the pre-emption: in the allocation after the second one cut by the time limit (the next check
        # is about 17 s after such a start), once its log shows a seeded share (15-50%) of the
        # generations that were left when it started, but not before 3 s (ccq set up) nor after 10 s
        pre_share = rnd.uniform(0.15, 0.5)
        log = os.path.join(d, "log.jsonl")
        pre_alloc, preempted = None, None
        seen, info, state, g_start = 0, {}, "", 0
        while time.monotonic() - t_sub < DEADLINE:
            info = job_info(job)
            state = info.get("JobState", "")
            text = read(out)
            st = starts_in(text)
            if st and max(st) != seen:
                seen = max(st)
                t_seen = time.monotonic()
                g_start = None
                print(f"test_slurm: allocation {seen} started", flush=True)
            cut = sorted(set(int(n) for n in re.findall(r"start (\d+): SIGUSR1", text)))
            if pre_alloc is None and len(cut) >= 2:
                pre_alloc = cut[1] + 1
            if preempted is None and pre_alloc is not None and seen >= pre_alloc and state == "RUNNING":
                mine = text[text.rfind(f"start {seen}: on "):]
                g = len(read(log).splitlines())
                if g_start is None and "continuing from" in mine:
                    g_start = g  # the log, cut back to the checkpoint
                if "SIGUSR1" in mine or "exit 7" in mine or "ccq search ended" in mine:
                    pre_alloc = seen + 1  # the time limit came first here: the next allocation
                elif time.monotonic() - t_seen >= 10 or (g_start is not None and time.monotonic() - t_seen >= 3
                                                          and g >= g_start + pre_share * (gens - g_start)):
                    rc, so, se = sh(["scontrol", "requeue", job])
                    if rc == 0:
                        preempted = seen
                        print(f"test_slurm: pre-empted allocation {seen} {time.monotonic() - t_seen:.2f} s after "
                              f"its start (the log at generation {g} of {gens})", flush=True)
                    else:
                        print(f"test_slurm: scontrol requeue refused ({se.strip()}); the next allocation", flush=True)
                        pre_alloc = seen + 1
            if state in ENDED or (not info and seen):
                break
            time.sleep(0.25)
        t_job = time.monotonic() - t_sub
        print(f"test_slurm: job {job} ended {state or 'gone'} after {t_job:.1f} s", flush=True)
        text = read(out)
        try:  # kept for a look afterwards
            shutil.copyfile(out, os.path.join(env["CCQ_SLURM_DIR"], "test_job.out"))
        except OSError:
            pass
        print("---- the job's output: search.sbatch's lines, ccq's stops and resumptions ----")
        for ln in text.splitlines():
            if ln.startswith(("search.sbatch:", "ccq:")) or "--resume auto" in ln or "search: done" in ln:
                print("  " + ln)
        print("----", flush=True)

        t.check(f"the job ended within {DEADLINE} s", state in ENDED, f"state {state!r}")
        t.check("the job ended COMPLETED, exit 0", state == "COMPLETED" and info.get("ExitCode") == "0:0",
                f"{state} {info.get('ExitCode')}")
        st = starts_in(text)
        starts = sorted(st)
        t.check("the job was started at least 3 times", len(starts) >= 3 and starts == list(range(1, len(starts) + 1)),
                str(starts))
        t.check("Slurm counts the restarts", info.get("Restarts") == str(len(starts) - 1),
                f"Restarts={info.get('Restarts')}, starts {starts}")
        warned = sorted(set(int(n) for n in re.findall(r"start (\d+): SIGUSR1: the time limit is near", text)))
        cut = sorted(set(int(n) for n in re.findall(
            r"start (\d+): ccq stopped with its checkpoint written \(exit 7, time limit\); requeueing", text)))
        t.check("at least 2 allocations were cut by the time limit's warning: ccq's exit 7, the script's requeue",
                len(cut) >= 2, f"warned {warned}, cut {cut}")
        t.check("every warned allocation was cut so, or had just finished the search",
                all(n in cut or f"start {n}: ccq search ended (exit 0)" in text for n in warned)
                and not re.search(r"start (%s): scontrol requeue refused" % "|".join(map(str, cut or [0])), text),
                f"warned {warned}, cut {cut}")
        t.check("the pre-emption happened, and the script saw its SIGTERM",
                preempted is not None and f"start {preempted}: SIGTERM" in text, str(preempted))
        t.check("ccq wrote a checkpoint at each time-limit stop",
                len(re.findall(r"search stopped on request at generation \d+; checkpoint", text)) >= len(cut))
        t.check("every allocation after the first resumed (--resume auto)",
                text.count("--resume auto: continuing from") == len(starts) - 1 and
                text.count("--resume auto: no ") == 1, "")
        t.check("the last allocation ended the search (exit 0)", starts and
                f"start {starts[-1]}: ccq search ended (exit 0)" in text, "")
        if os.path.exists(os.path.join(d, "out.h5")):
            got, base = files(d), files(ref)
            for n in base:
                t.check(f"{n}: byte-identical to the uninterrupted run's", got[n] == base[n],
                        f"{len(got[n])} against {len(base[n])} bytes")
        else:
            t.check("the job wrote the model", False, text[-3000:])
        print(f"test_slurm: {len(starts)} allocations, {len(cut)} cut by the time limit's warning "
              f"({', '.join(map(str, cut))}), pre-empted: {preempted}; reference {t_ref:.1f} s, job {t_job:.1f} s",
              flush=True)
        if state not in ENDED:
            print(text[-4000:])
except Stop:
    pass
finally:
    for j in jobs:  # nothing of ours left running (its processes gone before slurmd is stopped)
        if job_info(j).get("JobState") not in (None, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            sh(["scancel", j])
            for _ in range(60):
                if job_info(j).get("JobState") in (None, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
                    break
                time.sleep(1)
    if started_cluster:
        rc, so, se = sh([CLUSTER, "stop"], timeout=120)
        t.check("local cluster stops", rc == 0, se[-1000:])
t.finish()
