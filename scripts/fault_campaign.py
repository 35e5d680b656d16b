#!/usr/bin/python3
"""fault_campaign.py: the kill-and-resume campaign of issue 11 item 5 (run by scripts/fault_campaign.sh).

A reference `ccq search` runs to completion on 2 ranks; then, for each kind of fault, chains of runs
of the same search are killed at seeded random moments and resumed with `--resume` on a random rank
count (1-4) until one run completes; its final model, log and snapshots must be byte-identical to the
reference. Kinds:
  kill0   SIGKILL to rank 0 only (2-4 ranks): mpirun must tear the job down in bounded time
  killN   SIGKILL to one other rank (2-4 ranks): the same
  term    SIGTERM to every rank: ccq must write its checkpoint and exit 7, losing nothing
  ckpt    SIGKILL to every rank while rank 0 writes a checkpoint (inotify: the moment CKPT.tmp.PID
          appears, plus a random delay shorter than the write measured in the reference run)
After every kill each HDF5 file in the run folder (checkpoint, snapshots, model) must open and its
datasets read (h5py); generations lost = the last generation in the log when the job ended minus
the checkpoint's generation, which must be within run.checkpoint_every.
Also: unwritable outputs (a read-only tmpfs: exit 3 before any compute, nothing written) and a full
disk during a checkpoint (a small tmpfs: the previous checkpoint stays good, the message is clear, a
resume from it reaches the reference result).

The log is line-buffered in the ranks by a small LD_PRELOAD shim (setvbuf after fopen; the bytes
written are the same), so that the log on disk at a kill holds every finished generation and the
generations lost are measured exactly, not bounded below by stdio's 4 KiB buffer.
"""
import argparse
import ctypes
import glob
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import time

import h5py

KINDS = ["kill0", "killN", "term", "ckpt"]
KIND_NAMES = {
    "kill0": "SIGKILL rank 0",
    "killN": "SIGKILL another rank",
    "term": "SIGTERM all ranks",
    "ckpt": "SIGKILL all inside a checkpoint write",
}
TEARDOWN_LIMIT = 60.0  # seconds after a kill before the job counts as hung

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
static FILE *lb(FILE *f, const char *mode) {
    if (f && mode && (strchr(mode, 'w') || strchr(mode, 'a') || strchr(mode, '+'))) setvbuf(f, NULL, _IOLBF, 0);
    return f;
}
FILE *fopen(const char *p, const char *m) {
    static FILE *(*real)(const char *, const char *);
    if (!real) real = (FILE * (*)(const char *, const char *)) dlsym(RTLD_NEXT, "fopen");
    return lb(real(p, m), m);
}
FILE *fopen64(const char *p, const char *m) {
    static FILE *(*real)(const char *, const char *);
    if (!real) real = (FILE * (*)(const char *, const char *)) dlsym(RTLD_NEXT, "fopen64");
    return lb(real(p, m), m);
}
"""


def log(msg):
    print(msg, flush=True)


# ---- inotify (ctypes; no package needed) ------------------------------------------------

IN_CREATE, IN_MOVED_FROM, IN_DELETE = 0x100, 0x40, 0x200
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class Inotify:
    def __init__(self, folder):
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | 0o2000000)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, folder.encode(), IN_CREATE | IN_MOVED_FROM | IN_DELETE) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch " + folder)

    def events(self, timeout):
        """[(mask, name, time)] within timeout seconds (may be empty)."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        out = []
        if not r:
            return out
        now = time.perf_counter()
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return out
        i = 0
        while i + 16 <= len(buf):
            _, mask, _, n = struct.unpack_from("iIII", buf, i)
            name = buf[i + 16:i + 16 + n].split(b"\0", 1)[0].decode(errors="replace")
            out.append((mask, name, now))
            i += 16 + n
        return out

    def close(self):
        os.close(self.fd)


# ---- files ---------------------------------------------------------------------------------

def last_gen(path):
    """Generation of the last complete record of a JSON-lines log (0 if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read()
    except FileNotFoundError:
        return 0
    lines = tail.split(b"\n")[:-1]  # the part after the last newline is incomplete
    for line in reversed(lines):
        try:
            return int(json.loads(line)["gen"])
        except (ValueError, KeyError):
            continue
    return 0


def check_h5(path):
    """None if the file opens and every dataset and attribute reads, else the problem."""
    try:
        with h5py.File(path, "r") as f:
            for k in f.attrs:
                f.attrs[k]
            names = []
            f.visit(names.append)
            for n in names:
                if isinstance(f[n], h5py.Dataset):
                    f[n][()]
                for k in f[n].attrs:
                    f[n].attrs[k]
        return None
    except Exception as e:  # noqa: BLE001 (any failure is the finding)
        return "%s: %s" % (type(e).__name__, e)


def ckpt_gen(path):
    with h5py.File(path, "r") as f:
        return int(f.attrs["generation"])


def same_bytes(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except FileNotFoundError:
        return False


def snapshots(folder):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "model.g*.h5")) if ".tmp." not in p)


# ---- jobs ------------------------------------------------------------------------------------

class Campaign:
    def __init__(self, a):
        self.a = a
        self.ccq = os.path.realpath(a.ccq)
        self.out = os.path.abspath(a.out)
        self.rng = random.Random(a.seed)
        self.shim = None
        self.kills = []  # one dict per kill
        self.chains = {k: [] for k in KINDS}  # per kind: dicts of chain outcomes
        self.specials = []  # (case, ok, detail)
        self.findings = []

    # -- one mpirun --
    def cmd(self, np_, folder, resume=None, extra=()):
        c = ["mpirun", "--oversubscribe", "-np", str(np_)]
        if self.shim:
            c += ["-x", "LD_PRELOAD=" + self.shim]
        c += [self.ccq, "search", self.a.config]
        for s in self.a.set:
            c += ["--set", s]
        c += ["--set", "run.output=%s/model.h5" % folder, "--set", "run.log=%s/log.jsonl" % folder,
              "--set", "run.checkpoint=%s/ckpt.h5" % folder]
        c += list(extra)
        if resume:
            c += ["--resume", resume]
        return c

    def ranks(self, proc, np_, timeout=30.0):
        """{rank: pid} of the ccq processes mpirun started, once all np_ have exec'd ccq."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                return None
            found = {}
            for kid in self._children(proc.pid):
                try:
                    if os.readlink("/proc/%d/exe" % kid) != self.ccq:
                        continue
                    env = open("/proc/%d/environ" % kid, "rb").read().split(b"\0")
                except OSError:
                    continue
                for e in env:
                    if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                        found[int(e.split(b"=", 1)[1])] = kid
            if len(found) == np_:
                return found
            time.sleep(0.005)
        return None

    @staticmethod
    def _children(pid):
        kids = []
        for t in glob.glob("/proc/%d/task/*/children" % pid):
            try:
                kids += [int(x) for x in open(t).read().split()]
            except OSError:
                pass
        return kids

    @staticmethod
    def alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def run(self, np_, folder, resume=None, plan=None, tag="run", ckpt_count=0):
        """Runs one job; plan = None (to completion) or dict(kind, target, delay | nth).
        Returns dict(rc, killed, kill_t, teardown, hung, orphans, landed...)."""
        c = self.cmd(np_, folder, resume)
        fo = open(os.path.join(folder, tag + ".out"), "wb")
        fe = open(os.path.join(folder, tag + ".err"), "wb")
        watch = Inotify(folder) if plan and plan["kind"] == "ckpt" else None
        t_start = time.perf_counter()
        proc = subprocess.Popen(c, stdout=fo, stderr=fe, cwd=self.a.root, start_new_session=True)
        res = {"rc": None, "killed": False, "teardown": None, "hung": False, "orphans": 0, "np": np_,
               "landed": None, "pids": {}}
        try:
            pids = self.ranks(proc, np_)
            res["pids"] = pids or {}
            if plan and pids:
                self._kill_when(proc, pids, plan, folder, res, watch, t_start)
            if res["killed"]:
                try:
                    proc.wait(timeout=TEARDOWN_LIMIT)
                except subprocess.TimeoutExpired:
                    res["hung"] = True
                    for p in pids.values():
                        if self.alive(p):
                            os.kill(p, signal.SIGKILL)
                    proc.kill()
                    proc.wait()
                res["teardown"] = time.perf_counter() - res["kill_t"]
            else:
                try:
                    proc.wait(timeout=self.a.run_limit)
                except subprocess.TimeoutExpired:
                    res["hung"] = True
                    for p in (pids or {}).values():
                        if self.alive(p):
                            os.kill(p, signal.SIGKILL)
                    proc.kill()
                    proc.wait()
            res["rc"] = proc.returncode
            time.sleep(0.05)
            for p in (pids or {}).values():
                if self.alive(p):
                    res["orphans"] += 1
                    os.kill(p, signal.SIGKILL)
        finally:
            if watch:
                watch.close()
            fo.close()
            fe.close()
        res["seconds"] = time.perf_counter() - t_start
        return res

    def _kill_when(self, proc, pids, plan, folder, res, watch, t_start):
        kind = plan["kind"]
        logp = os.path.join(folder, "log.jsonl")
        if kind == "ckpt":
            seen = 0
            while proc.poll() is None:
                for mask, name, _ in watch.events(0.2):
                    if mask & IN_CREATE and name.startswith("ckpt.h5.tmp."):
                        seen += 1
                        if seen == plan["nth"]:
                            t_end = time.perf_counter() + plan["delay"]
                            while time.perf_counter() < t_end:
                                pass
                            self._send(pids.values(), signal.SIGKILL, res)
                            res["landed"] = os.path.exists(os.path.join(folder, name))
                            res["tmp_name"] = name
                            return
            return
        # the others: once the log reaches the target generation (0: from the launch), after the delay.
        # A resumed run first truncates the log to the checkpoint's log_bytes: until its size has
        # changed, the records past that are the killed run's and do not count.
        trusted = plan.get("size0") is None
        while proc.poll() is None:
            if not trusted:
                try:
                    trusted = os.path.getsize(logp) != plan["size0"]
                except OSError:
                    pass
            if plan["target"] == 0 or (trusted and last_gen(logp) >= plan["target"]):
                t_end = time.perf_counter() + plan["delay"]
                while proc.poll() is None and time.perf_counter() < t_end:
                    time.sleep(0.001)
                if proc.poll() is not None:
                    return
                if kind == "kill0":
                    self._send([pids[0]], signal.SIGKILL, res)
                elif kind == "killN":
                    self._send([pids[plan["rank"]]], signal.SIGKILL, res)
                else:
                    self._send(pids.values(), signal.SIGTERM, res)
                return
            time.sleep(0.003)

    @staticmethod
    def _send(pids, sig, res):
        res["kill_t"] = time.perf_counter()
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        res["killed"] = True

    # -- checks --
    def check_folder(self, folder):
        """(unreadable [(file, problem)], temp files left)"""
        bad, tmps = [], []
        for p in sorted(glob.glob(os.path.join(folder, "*.h5*"))):
            if ".tmp." in os.path.basename(p):
                tmps.append(os.path.basename(p))
                continue
            if p.endswith(".h5"):
                prob = check_h5(p)
                if prob:
                    bad.append((os.path.basename(p), prob))
        return bad, tmps

    def compare(self, folder):
        """Differences against the reference (empty: bit-identical)."""
        ref = os.path.join(self.out, "ref")
        diff = []
        for f in ("model.h5", "log.jsonl"):
            if not same_bytes(os.path.join(folder, f), os.path.join(ref, f)):
                diff.append(f)
        a, b = snapshots(folder), snapshots(ref)
        if a != b:
            diff.append("snapshot set (%d vs %d)" % (len(a), len(b)))
        else:
            diff += [s for s in a if not same_bytes(os.path.join(folder, s), os.path.join(ref, s))]
        return diff

    # -- the reference --
    def reference(self):
        folder = os.path.join(self.out, "ref")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        watch = Inotify(folder)
        c = self.cmd(2, folder)
        log("reference: " + " ".join(c))
        t0 = time.perf_counter()
        fo = open(os.path.join(folder, "run.out"), "wb")
        fe = open(os.path.join(folder, "run.err"), "wb")
        proc = subprocess.Popen(c, stdout=fo, stderr=fe, cwd=self.a.root)
        created, writes = {}, []
        while proc.poll() is None:
            for mask, name, t in watch.events(0.1):
                if name.startswith("ckpt.h5.tmp."):
                    if mask & IN_CREATE:
                        created[name] = t
                    elif mask & IN_MOVED_FROM and name in created:
                        writes.append(t - created.pop(name))
        watch.close()
        fo.close()
        fe.close()
        self.ref_seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit("fault_campaign: the reference search failed (exit %d): see %s" % (proc.returncode, folder))
        self.g_ref = last_gen(os.path.join(folder, "log.jsonl"))
        self.every = self.setting("run.checkpoint_every", 50)
        self.ckpt_gens = sorted({g for g in range(self.every, self.g_ref + 1, self.every)} | {self.g_ref})
        # events read together carry one time stamp: a write seen as 0 s was not measured
        writes = sorted(w for w in writes if w > 0)
        self.write_s = writes
        # the kill lands within [0, 0.8 x the lower quartile of the writes measured] after the temp file
        # appears (kills that land after the rename are counted as missed)
        self.ckpt_delay_max = 0.8 * (writes[len(writes) // 4] if writes else 0.002)
        log("reference: %.1f s, %d generations, checkpoints at %s; checkpoint write %.1f-%.1f ms (%d measured)"
            % (self.ref_seconds, self.g_ref, self.ckpt_gens, 1e3 * (writes[0] if writes else 0),
               1e3 * (writes[-1] if writes else 0), len(writes)))

    def setting(self, key, default):
        for s in self.a.set:
            k, v = s.split("=", 1)
            if k == key:
                return int(v)
        sec, name = key.split(".")
        cur = None
        for line in open(os.path.join(self.a.root, self.a.config)):
            line = line.strip()
            if line.startswith("["):
                cur = line.strip("[]")
            elif "=" in line and cur == sec and line.split("=")[0].strip() == name:
                return int(line.split("=", 1)[1].split(";")[0])
        return default

    # -- chains --
    def chain(self, kind, idx, kills_left):
        folder = os.path.join(self.out, "%s_%02d" % (kind, idx))
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        n_kills = min(kills_left, self.rng.randint(1, 3))
        ch = {"kind": kind, "idx": idx, "kills": 0, "runs": 0, "ok": False, "problems": []}
        resume, done, run_i = None, False, 0
        while not done:
            start_gen = ckpt_gen(resume) if resume else 0
            plan = None
            left = [g for g in self.ckpt_gens if g > start_gen]
            if ch["kills"] < n_kills and left:
                if kind == "ckpt":
                    plan = {"kind": kind, "nth": self.rng.randint(1, len(left)),
                            "delay": self.rng.uniform(0, self.ckpt_delay_max)}
                    plan["at_gen"] = left[plan["nth"] - 1]
                else:
                    plan = {"kind": kind, "target": self.rng.randint(start_gen, self.g_ref - 1),
                            "delay": self.rng.uniform(0, 0.25)}
                    if plan["target"] == start_gen:  # the set-up phase (or just after it)
                        plan["target"] = 0
                        plan["delay"] = self.rng.uniform(0, 4.0)
                    if resume:
                        lp = os.path.join(folder, "log.jsonl")
                        with h5py.File(resume, "r") as f:
                            lb = int(f.attrs["log_bytes"])
                        size0 = os.path.getsize(lp) if os.path.exists(lp) else -1
                        plan["size0"] = size0 if size0 != lb else None
            lo = 2 if plan and kind in ("kill0", "killN") else 1
            np_ = self.rng.randint(lo, 4)
            if plan and kind == "killN":
                plan["rank"] = self.rng.randint(1, np_ - 1)
            tag = "run%d" % run_i
            tmp_before = set(self.check_folder(folder)[1])
            r = self.run(np_, folder, resume=resume, plan=plan, tag=tag)
            run_i += 1
            ch["runs"] += 1
            desc = "%s chain %d %s: np %d%s" % (kind, idx, tag, np_, " --resume (gen %d)" % start_gen if resume
                                                 else " fresh")
            if r["hung"]:
                ch["problems"].append("%s: hung" % tag)
                self.findings.append("%s: the job did not end within %.0f s (%s)" % (desc, TEARDOWN_LIMIT, folder))
            if r["orphans"]:
                ch["problems"].append("%s: %d rank(s) outlived mpirun" % (tag, r["orphans"]))
                self.findings.append("%s: %d rank(s) still running after mpirun exited" % (desc, r["orphans"]))
            if r["killed"]:
                ch["kills"] += 1
                bad, tmps = self.check_folder(folder)
                tmps = [t for t in tmps if t not in tmp_before]  # left by this kill
                ck = os.path.join(folder, "ckpt.h5")
                has_ck = os.path.exists(ck) and not any(b[0] == "ckpt.h5" for b in bad)
                cgen = ckpt_gen(ck) if has_ck else 0
                lgen = last_gen(os.path.join(folder, "log.jsonl"))
                k = {"kind": kind, "chain": idx, "run": tag, "np": np_, "plan": plan, "rc": r["rc"],
                     "teardown_s": round(r["teardown"], 3), "hung": r["hung"], "orphans": r["orphans"],
                     "unreadable": bad, "tmp_left": tmps, "log_gen": lgen, "ckpt_gen": cgen,
                     "lost": lgen - cgen, "landed": r["landed"], "resumed_from": start_gen,
                     "fresh_restart": not has_ck}
                self.kills.append(k)
                what = ("gen>=%d +%.3fs" % (plan["target"], plan["delay"]) if kind != "ckpt"
                        else "checkpoint #%d (gen %d) +%.3f ms, %s" % (plan["nth"], plan["at_gen"], 1e3 * plan["delay"],
                                                                   "inside the write" if r["landed"] else "missed"))
                if kind == "killN":
                    what += ", rank %d" % plan["rank"]
                log("  %s: kill at %s -> exit %s after %.2f s; log gen %d, checkpoint gen %d, lost %d%s%s"
                    % (desc, what, r["rc"], r["teardown"], lgen, cgen, lgen - cgen,
                       "; UNREADABLE %s" % bad if bad else "", "; temp left %s" % tmps if tmps else ""))
                if bad:
                    self.findings.append("%s: unreadable after the kill: %s (%s)" % (desc, bad, folder))
                if not 0 <= lgen - cgen <= self.every:
                    self.findings.append("%s: %d generations lost (log %d, checkpoint %d), more than %d"
                                         % (desc, lgen - cgen, lgen, cgen, self.every))
                if kind == "term" and r["rc"] != 7 and not (r["rc"] == 0 and lgen == self.g_ref):
                    self.findings.append("%s: SIGTERM gave exit %s, not 7" % (desc, r["rc"]))
                resume = ck if has_ck else None
                if r["hung"]:
                    done = True
            else:
                if r["rc"] == 0:
                    done = True
                    diff = self.compare(folder)
                    ch["ok"] = not diff
                    log("  %s: completed in %.1f s; %s" % (desc, r["seconds"], "bit-identical to the reference"
                                                          if not diff else "DIFFERS: %s" % diff))
                    if diff:
                        ch["problems"].append("differs: %s" % diff)
                        self.findings.append("%s: the final result differs from the reference: %s (%s)"
                                             % (desc, diff, folder))
                else:
                    log("  %s: exit %s without a kill (see %s/%s.err)" % (desc, r["rc"], folder, tag))
                    ch["problems"].append("%s: exit %s" % (tag, r["rc"]))
                    self.findings.append("%s: exit %s without a kill: %s" % (desc, r["rc"], self.err_line(folder, tag)))
                    done = True
        if ch["ok"] and not ch["problems"] and not self.a.keep:
            shutil.rmtree(folder)
        self.chains[kind].append(ch)
        return ch

    @staticmethod
    def err_line(folder, tag):
        try:
            lines = [l for l in open(os.path.join(folder, tag + ".err")).read().splitlines() if l.startswith("ccq:")]
            return lines[0] if lines else "(no ccq: line on stderr)"
        except OSError:
            return "(no stderr)"

    def campaign(self):
        for kind in self.a.kinds:
            log("%s (%s): %d kills" % (kind, KIND_NAMES[kind], self.a.n))
            idx = 0
            while sum(c["kills"] for c in self.chains[kind]) < self.a.n:
                before = sum(c["kills"] for c in self.chains[kind])
                self.chain(kind, idx, self.a.n - before)
                idx += 1
                if idx > 4 * self.a.n:
                    self.findings.append("%s: gave up: chains end without kills" % kind)
                    break

    # -- special cases --
    def special_unwritable(self):
        base = os.path.join(self.out, "unwritable")
        ro = os.path.join(base, "ro")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(ro)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro],
                                 capture_output=True).returncode == 0
        if not mounted:
            os.rmdir(ro)
            open(ro, "w").close()  # a regular file as the folder: ENOTDIR, root cannot write below it either
        how = "a read-only tmpfs" if mounted else "a path below a regular file"
        # the baseline: the same mpirun stopped by a usage error (exit 2), i.e. start-up and no compute
        t0 = time.perf_counter()
        subprocess.run(self.cmd(2, base) + ["--set", "run.no_such_key=1"], cwd=self.a.root, capture_output=True,
                       timeout=TEARDOWN_LIMIT)
        base_s = time.perf_counter() - t0
        self.specials.append(("baseline: the same 2-rank mpirun stopped by a usage error (exit 2)", True,
                              "%.2f s (mpirun start-up and the configuration, no compute)" % base_s))
        log("unwritable: baseline (usage error, exit 2) %.2f s" % base_s)
        try:
            for key in ("run.output", "run.log", "run.checkpoint", "run.output (missing folder)"):
                w = os.path.join(base, key.split()[0].replace("run.", ""))
                shutil.rmtree(w, ignore_errors=True)
                os.makedirs(w)
                paths = {"run.output": "%s/model.h5" % w, "run.log": "%s/log.jsonl" % w,
                         "run.checkpoint": "%s/ckpt.h5" % w}
                k = key.split()[0]
                paths[k] = os.path.join(ro, "sub" if "missing" in key else "", os.path.basename(paths[k]))
                c = self.cmd(2, w)[:-6]
                c += ["--set", "run.output=" + paths["run.output"], "--set", "run.log=" + paths["run.log"],
                      "--set", "run.checkpoint=" + paths["run.checkpoint"]]
                t0 = time.perf_counter()
                try:
                    p = subprocess.run(c, cwd=self.a.root, capture_output=True, timeout=TEARDOWN_LIMIT)
                    rc, err = p.returncode, p.stderr.decode(errors="replace")
                except subprocess.TimeoutExpired:
                    rc, err = None, "(hung)"
                dt = time.perf_counter() - t0
                written = sorted(os.listdir(w)) + (sorted(os.listdir(ro)) if mounted else [])
                ccq_lines = [l for l in err.splitlines() if l.startswith("ccq:")]
                msg = ccq_lines[0] if ccq_lines else err.strip().splitlines()[0] if err.strip() else "(nothing)"
                ok = rc == 3 and not written and dt < base_s + 3 and len(ccq_lines) == 1
                self.specials.append(("unwritable %s (%s), 2 ranks" % (key, how), ok,
                                      "exit %s in %.2f s, files written: %s; stderr: `%s`" % (rc, dt, written or "none",
                                                                                               msg)))
                log("unwritable %s: exit %s in %.2f s, written %s: %s" % (key, rc, dt, written, msg))
                if not ok:
                    self.findings.append("unwritable %s: exit %s in %.2f s, written %s, %d ccq: lines: %s"
                                         % (key, rc, dt, written, len(ccq_lines), err.strip()[:500]))
        finally:
            if mounted:
                subprocess.run(["umount", ro])

    def special_full_disk(self):
        folder = os.path.join(self.out, "fulldisk")
        small = os.path.join(folder, "small")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(small)
        ref_ck = os.path.join(self.out, "ref", "ckpt.h5")
        size_kb = (os.path.getsize(ref_ck) * 3 // 2) // 1024  # one checkpoint fits, not two side by side
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk" % size_kb, "tmpfs", small],
                          capture_output=True).returncode != 0:
            self.specials.append(("full disk during a checkpoint", False, "cannot mount a tmpfs (not root?)"))
            return
        try:
            c = self.cmd(2, folder)[:-2] + ["--set", "run.checkpoint=%s/ckpt.h5" % small]
            p = subprocess.run(c, cwd=self.a.root, capture_output=True, timeout=self.a.run_limit)
            err = p.stderr.decode(errors="replace")
            ccq_lines = [l for l in err.splitlines() if l.startswith("ccq:")]
            msg = ccq_lines[0] if ccq_lines else "(no ccq: line)"
            ck = os.path.join(small, "ckpt.h5")
            prob = check_h5(ck) if os.path.exists(ck) else "missing"
            cgen = ckpt_gen(ck) if prob is None else None
            left = [f for f in os.listdir(small) if f != "ckpt.h5"]
            lgen = last_gen(os.path.join(folder, "log.jsonl"))
            log("full disk (tmpfs %d KiB for the checkpoint): exit %d, %s; checkpoint %s (gen %s), log gen %d, "
                "left on the tmpfs: %s" % (size_kb, p.returncode, msg, prob or "readable", cgen, lgen, left))
            first_ok = p.returncode == 3 and prob is None and cgen == self.every and not left and len(ccq_lines) == 1
            # clear: names the checkpoint the user configured and the cause (no space left on the device)
            clear = "%s:" % ck in msg and "space" in msg.lower()
            if not clear:
                self.findings.append("full disk during a checkpoint: the message `%s` names %s and %s (exit %d; the "
                                     "previous checkpoint stayed good: %s)" % (
                                         msg, "the configured checkpoint" if "%s:" % ck in msg else "the temp file, not the checkpoint",
                                         "the cause" if "space" in msg.lower() else "not the cause (no space left on the device)",
                                         p.returncode, prob is None))
            # resume from the surviving checkpoint, the next ones on the normal disk
            r = None
            if prob is None:
                r = self.run(self.rng.randint(1, 4), folder, resume=ck, tag="resume")
                diff = self.compare(folder) if r["rc"] == 0 else ["exit %s" % r["rc"]]
            else:
                diff = ["no checkpoint to resume from"]
            self.specials.append(("full disk during a checkpoint (checkpoint on a %d KiB tmpfs), 2 ranks" % size_kb,
                                  first_ok and not diff and clear,
                                  "exit %d; stderr: `%s` (%s); previous checkpoint %s (gen %s); temp files left: %s; "
                                  "resumed on %s ranks: %s" % (p.returncode, msg, "clear" if clear else "**unclear: names the temp "
                                                               "file, not the cause**", prob or "readable", cgen, left or "none",
                                                               r["np"] if r else "-",
                                                               "bit-identical" if not diff else "DIFFERS %s" % diff)))
            if not (first_ok and not diff):  # (an unclear message is its own finding above)
                self.findings.append("full disk: exit %d, stderr %r, checkpoint %s gen %s, left %s, resume %s (%s)"
                                     % (p.returncode, err.strip()[:400], prob, cgen, left, diff, folder))
            elif not self.a.keep:
                pass
        finally:
            subprocess.run(["umount", small])

    # -- the report --
    def summary(self, wall):
        a = self.a
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=a.root, capture_output=True,
                              text=True).stdout.strip()
        if a.commit and a.commit != head:
            head = "%s (ccq built from %s)" % (head, a.commit)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src", "include"],
                               cwd=a.root, capture_output=True, text=True).stdout.strip()
        uname = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        ncpu = os.cpu_count()
        L = []
        L.append("# Fault campaign (issue 11 item 5)")
        L.append("")
        L.append("- command: `%s`" % a.command)
        L.append("- ccq: `%s`, git commit %s%s" % (self.ccq, head, " (uncommitted changes in src/ or include/ of the tree at the time)" if dirty and not a.commit
                                                   else ""))
        L.append("- machine: %s, %s, %d cores (shared)" % (uname, cpu, ncpu))
        L.append("- search: `%s`%s" % (a.config, "".join(" `--set %s`" % s for s in a.set)))
        L.append("- reference: 2 ranks, %.1f s, %d generations, checkpoints at generations %s; a checkpoint write "
                 "(temp file created to renamed) took %.1f-%.1f ms; a kill inside one waits 0-%.1f ms after the temp file appears" % (
                     self.ref_seconds, self.g_ref, ", ".join(map(str, self.ckpt_gens)),
                     1e3 * self.write_s[0] if self.write_s else 0, 1e3 * self.write_s[-1] if self.write_s else 0,
                     1e3 * self.ckpt_delay_max))
        L.append("- seed %d, N = %d kills per kind; wall time %.0f s (%.1f min)" % (a.seed, a.n, wall, wall / 60))
        L.append("")
        L.append("Each chain starts a fresh search, kills it at a seeded random moment, resumes it with `--resume` "
                 "on a random rank count (1-4; 2-4 where one rank is killed), up to 3 kills, then lets it finish; "
                 "the final model, log and every snapshot are compared byte for byte with the reference. "
                 "Lost = the last generation in the log when the job had ended minus the checkpoint's generation "
                 "(the bound is run.checkpoint_every = %d)." % self.every)
        L.append("")
        L.append("| kind | kills | chains | chains bit-identical | unreadable files | temp files left | "
                 "max generations lost (mean) | lost within %d | job end after the kill, s (max) | other |" % self.every)
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for kind in a.kinds:
            ks = [k for k in self.kills if k["kind"] == kind]
            chs = self.chains[kind]
            lost = [k["lost"] for k in ks]
            td = [k["teardown_s"] for k in ks]
            other = []
            if kind == "term":
                late = sum(k["rc"] == 0 and k["log_gen"] == self.g_ref for k in ks)
                other.append("exit 7: %d/%d%s" % (sum(k["rc"] == 7 for k in ks), len(ks),
                                                 " (exit 0: %d, the signal came after the last generation)" % late
                                                 if late else ""))
            if kind == "ckpt":
                other.append("landed inside the write: %d/%d" % (sum(bool(k["landed"]) for k in ks), len(ks)))
            if kind in ("kill0", "killN"):
                other.append("mpirun exit codes %s" % sorted({k["rc"] for k in ks}))
            other.append("killed before the first checkpoint (restarted fresh) %d" % sum(k["fresh_restart"] for k in ks))
            hung = sum(k["hung"] for k in ks)
            orph = sum(k["orphans"] for k in ks)
            other.append("hung %d, orphan ranks %d" % (hung, orph))
            L.append("| %s | %d | %d | %d/%d | %d | %d | %s | %d/%d | %s | %s |" % (
                KIND_NAMES[kind], len(ks), len(chs), sum(c["ok"] for c in chs), len(chs),
                sum(len(k["unreadable"]) for k in ks), sum(len(k["tmp_left"]) for k in ks),
                "%d (%.1f)" % (max(lost), sum(lost) / len(lost)) if lost else "-",
                sum(0 <= x <= self.every for x in lost), len(lost),
                "%.2f (median %.2f)" % (max(td), sorted(td)[len(td) // 2]) if td else "-", "; ".join(other)))
        if self.specials:
            L.append("")
            L.append("| case | as promised | observed |")
            L.append("|---|---|---|")
            for case, ok, detail in self.specials:
                L.append("| %s | %s | %s |" % (case, "yes" if ok else "**no**", detail.replace("|", "\\|")))
        L.append("")
        if self.findings:
            L.append("Findings (%d):" % len(self.findings))
            L.append("")
            L += ["- " + f for f in self.findings]
        else:
            L.append("No failure: every chain bit-identical, every file readable after every kill, nothing hung.")
        L.append("")
        L.append("Every kill: `%s`." % os.path.join(self.out, "kills.jsonl"))
        text = "\n".join(L) + "\n"
        os.makedirs(os.path.dirname(os.path.abspath(a.summary)), exist_ok=True)
        with open(a.summary, "w") as f:
            f.write(text)
        with open(os.path.join(self.out, "kills.jsonl"), "w") as f:
            for k in self.kills:
                f.write(json.dumps(k) + "\n")
        return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ccq", required=True)
    p.add_argument("--root", required=True, help="the folder the config's relative paths are relative to")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--no-special", action="store_true")
    p.add_argument("--no-linebuf", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the folders of bit-identical chains")
    p.add_argument("--run-limit", type=float, default=600.0, help="seconds before a run without a kill is hung")
    p.add_argument("--command", default=" ".join(sys.argv))
    p.add_argument("--commit", default="", help="the commit the ccq binary was built from, when not the tree's HEAD")
    a = p.parse_args()
    a.kinds = [k for k in a.kinds.split(",") if k]
    for k in a.kinds:
        if k not in KINDS:
            sys.exit("fault_campaign: --kinds: unknown kind %s (%s)" % (k, ",".join(KINDS)))
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    c = Campaign(a)
    if not a.no_linebuf:
        src = os.path.join(c.out, "linebuf.c")
        open(src, "w").write(SHIM)
        so = os.path.join(c.out, "linebuf.so")
        if subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl"]).returncode == 0:
            c.shim = so
        else:
            log("fault_campaign: cannot build the line-buffering shim: generations lost are lower bounds")
    log("fault_campaign: seed %d, N %d, out %s" % (a.seed, a.n, c.out))
    c.reference()
    if not a.no_special:
        c.special_unwritable()
        c.special_full_disk()
    c.campaign()
    text = c.summary(time.time() - t0)
    print()
    print(text)
    return 1 if c.findings else 0


if __name__ == "__main__":
    sys.exit(main())
