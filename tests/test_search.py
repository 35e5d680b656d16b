#!/usr/bin/env python3
"""test_search.py DATA.h5 MODEL.h5 [RESNET.h5 [OPSNET.h5]]: the search's reproducibility contract.

A small search (2-bit lenet, first/last 8-bit) must give a bit-identical
final model, log and checkpoint for 1, 2, 3 and 4 MPI ranks (the passes of
a generation are cut into equal shares, so ranks split individuals and
batches; with lambda = 2 and 4 ranks there are more ranks than items); killed with
SIGKILL at a random moment and resumed (with another rank count) it must end
identical to the uninterrupted run; SIGTERM must stop it with exit 7 after a
checkpoint it can resume from (resumed with incremental evaluation switched
off: exact too). Incremental evaluation on and off give bit-identical
model, log and checkpoint for every grouping mode on 1 to 4 ranks (with a
cache small enough to split batches into chunks), with the paired
acceptance test on the confirmation batch and on the selection batch, on
both reference models and with the scalar kernels (and with the float prior,
which must change the search, subcomponents sized by layer, the combination candidate, and racing, whose stages are cut into rank shares again); a checkpoint from another configuration, a
damaged checkpoint and a bad configuration are refused with one clear line
and their exit codes, leaving the existing files untouched. Also: the search
improves the batch fitness it optimises over its round-to-nearest start."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ccqtest import Checks, ccq_binary, run, stop_after_checkpoint

data, model = sys.argv[1], sys.argv[2]
extra_models = sys.argv[3:]  # ResNet-20, then the every-op network of test_ops.py
ccq = ccq_binary()
t = Checks("search")
MPI = ["mpirun", "--oversubscribe", "-np"]
seed = int(os.environ.get("CCQ_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
print(f"test_search: kill-time seed {seed} (set CCQ_TEST_SEED to repeat)")
rnd = random.Random(seed)

CONFIG = """[model]
model = {model}
data = {data}
[quant]
wbits = 2
first_last_8 = true
calib_images = 256
[search]
seed = {sseed}
lambda = 8
mu = 2
group = confidence
group_size = 64
batch = 128
confirm_batch = 128
val_images = 1000
[run]
output = {d}/out.h5
log = {d}/log.jsonl
checkpoint = {d}/ckpt.h5
checkpoint_every = 4
budget = {budget}
"""


def setup(d, budget=400, sseed=3):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "search.ini")
    open(p, "w").write(CONFIG.format(model=model, data=data, d=d, budget=budget, sseed=sseed))
    return p


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in ("out.h5", "log.jsonl", "ckpt.h5")}


def search(cfg, np_=1, extra=()):
    cmd = ([ccq] if np_ == 1 else MPI + [str(np_), ccq]) + ["search", cfg, *extra]
    return run(cmd)


with tempfile.TemporaryDirectory() as root:
    ref = os.path.join(root, "ref")
    rc, so, se = search(setup(ref))
    t.check("np=1 runs", rc == 0, se[-2000:])
    base = files(ref)
    recs = [json.loads(l) for l in base["log.jsonl"].decode().splitlines()]
    t.check("log has one record per generation", [r["gen"] for r in recs] == list(range(1, len(recs) + 1)))
    t.check("some changes were accepted", recs[-1]["accepted_total"] > 0, str(recs[-1]))
    for np_ in (2, 3, 4):
        d = os.path.join(root, f"np{np_}")
        rc, so, se = search(setup(d), np_)
        t.check(f"np={np_} runs", rc == 0, se[-2000:])
        got = files(d)
        for n in base:
            t.check(f"np={np_}: {n} bit-identical to np=1", got[n] == base[n])

    # more ranks than items: lambda 2 (3 items a generation, 2 for confirmations) on 4 ranks against 1
    few = {}
    for np_ in (1, 4):
        d = os.path.join(root, f"few{np_}")
        cfg = setup(d, budget=120)
        rc, so, se = search(cfg, np_, ["--set", "search.lambda=2", "--set", "search.mu=1"])
        t.check(f"lambda 2 on {np_} ranks runs", rc == 0, se[-2000:])
        few[np_] = files(d)
    for n in few[1]:
        t.check(f"lambda 2: {n} bit-identical on 4 ranks and on 1", few[4][n] == few[1][n])

    # SIGKILL of the whole job at a random moment, resume with another rank count
    d = os.path.join(root, "kill")
    cfg = setup(d)
    p = subprocess.Popen(MPI + ["2", ccq, "search", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    delay = rnd.uniform(0.8, 2.5)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    if os.path.exists(os.path.join(d, "ckpt.h5")):
        # what a SIGKILL inside a checkpoint write leaves: removed on resume (only PATH.tmp.DIGITS)
        open(os.path.join(d, "ckpt.h5.tmp.999999"), "w").write("partial")
        open(os.path.join(d, "ckpt.h5.tmp.notapid"), "w").write("not ours")
        rc, so, se = search(cfg, 3, ["--resume", os.path.join(d, "ckpt.h5")])
        t.check(f"resume after SIGKILL at {delay:.2f} s", rc == 0, se[-2000:])
        t.check("stale CKPT.tmp.PID removed on resume, other files kept",
                not os.path.exists(os.path.join(d, "ckpt.h5.tmp.999999"))
                and os.path.exists(os.path.join(d, "ckpt.h5.tmp.notapid")) and "removed" in so, so[-500:])
        os.unlink(os.path.join(d, "ckpt.h5.tmp.notapid"))
        got = files(d)
        for n in base:
            t.check(f"killed at {delay:.2f} s and resumed on 3 ranks: {n} identical", got[n] == base[n])
    else:
        print(f"test_search: killed at {delay:.2f} s before the first checkpoint; resume from scratch is the plain run")

    # SIGTERM: exit 7 with a checkpoint, then resume (one rank, no mpirun: the signal goes to ccq itself)
    d = os.path.join(root, "term")
    cfg = setup(d)
    # once the first checkpoint exists (a loaded machine may take a while to set up)
    rc_t, err = stop_after_checkpoint([ccq, "search", cfg], os.path.join(d, "ckpt.h5"))
    t.check("SIGTERM: exit 7", rc_t == 7, f"rc={rc_t} {err}")
    t.check("SIGTERM: says where the checkpoint is", "stopped on request" in err and "ckpt.h5" in err, err)
    rc, so, se = search(cfg, 2, ["--resume", os.path.join(d, "ckpt.h5"), "--set", "run.incremental=false"])
    t.check("resume after SIGTERM (incremental off)", rc == 0, se[-2000:])
    got = files(d)
    for n in base:
        t.check(f"SIGTERM and resume with incremental off: {n} identical", got[n] == base[n])

    # incremental evaluation: on and off, every grouping mode, 1-4 ranks, chunked caches, paired acceptance
    modes = [("confidence", ["--set", "search.combine=true"]), ("layer", ["--set", "search.accept_z=1.5"]),
             ("random", ["--set", "search.accept_z=1", "--set", "search.confirm_batch=0"]),
             ("layer_confidence", ["--set", "search.accept_z=0.5", "--set", "search.prior=float",
                                  "--set", "search.group_fraction=0.05"]),
             # racing: uneven stages (128 images in 3) cut again into 1-4 rank shares
             ("confidence", ["--set", "search.race_z=0.5", "--set", "search.race_stages=3",
                             "--set", "search.combine=true", "--set", "search.accept_z=1"])]
    for g, extra in modes:
        label = g + ("_race" if "search.race_z=0.5" in extra else "")
        extra = ["--set", f"search.group={g}"] + extra
        runs = {}
        for inc, np_, cache in (("true", 1, 256), ("false", 1, 256), ("true", 2, 1), ("false", 3, 1), ("true", 4, 256)):
            d = os.path.join(root, f"inc_{label}_{inc}_{np_}")
            rc, so, se = search(setup(d, budget=240), np_, extra + ["--set", f"run.incremental={inc}",
                                                                    "--set", f"run.cache_mb={cache}"])
            t.check(f"{g}: incremental={inc} on {np_} ranks runs", rc == 0, se[-2000:])
            runs[(inc, np_)] = files(d)
        ref_run = runs[("true", 1)]
        recs_g = [json.loads(l) for l in ref_run["log.jsonl"].decode().splitlines()]
        t.check(f"{g}: some changes accepted", recs_g[-1]["accepted_total"] > 0, str(recs_g[-1]))
        if "accept_z" in " ".join(extra):
            t.check(f"{g}: the paired statistic is logged", any("z" in r for r in recs_g))
        if "search.combine=true" in extra:
            t.check(f"{g}: the combination is evaluated, and chosen at least once",
                    any("combined" in r for r in recs_g) and any(r.get("combined_won") for r in recs_g))
        if label.endswith("_race"):
            # 8 individuals and the context: 9 whole-batch passes a generation without racing
            per_gen = [b["evaluations"] - a["evaluations"] - 2 * ("confirm_context" in b) - 2 * ("combined" in b)
                       for a, b in zip(recs_g, recs_g[1:])]
            t.check(f"{label}: individuals are dropped, and the generations that drop some cost fewer evaluations",
                    any(r.get("raced_out", 0) > 0 for r in recs_g)
                    and all(c < 9 for c, r in zip(per_gen, recs_g[1:]) if r["raced_out"] >= 3)
                    and all(c == 9 for c, r in zip(per_gen, recs_g[1:]) if r["raced_out"] == 0),
                    str([(r["raced_out"], c) for c, r in zip(per_gen, recs_g[1:])][:20]))
            # stopped at half the budget on 2 ranks and continued on 3 from its checkpoint: identical
            d = os.path.join(root, "race_resume")
            rc, so, se = search(setup(d, budget=120), 2, extra)
            rc2, so, se2 = search(setup(d, budget=240), 3, extra + ["--resume", os.path.join(d, "ckpt.h5")])
            t.check(f"{label}: stopped at 120 evaluations and resumed on 3 ranks: runs", rc == 0 and rc2 == 0,
                    se[-500:] + se2[-500:])
            for n, v in files(d).items():
                t.check(f"{label}: stopped and resumed: {n} identical", v == ref_run[n])
            d = os.path.join(root, "inc_norace")
            rc, so, se = search(setup(d, budget=240), 1, [a if a != "search.race_z=0.5" else "search.race_z=0"
                                                          for a in extra])
            t.check(f"{label}: racing changes the search (the log differs from race_z 0's)",
                    rc == 0 and files(d)["log.jsonl"] != ref_run["log.jsonl"], se[-500:])
        for key, got in runs.items():
            for n in ref_run:
                t.check(f"{label}: incremental={key[0]} on {key[1]} ranks: {n} bit-identical", got[n] == ref_run[n])
        if "search.prior=float" in extra:
            d = os.path.join(root, f"inc_{g}_flat")
            flat = [a if a != "search.prior=float" else "search.prior=flat" for a in extra]
            rc, so, se = search(setup(d, budget=240), 1, flat)
            t.check(f"{g}: the float prior changes the search (the log differs from the flat prior's)",
                    rc == 0 and files(d)["log.jsonl"] != ref_run["log.jsonl"], se[-500:])
    # a paired test demanding more standard errors accepts less, and every acceptance has its z above the bar
    d = os.path.join(root, "z3")
    rc, so, se = search(setup(d, budget=240), 1, ["--set", "search.accept_z=3", "--set", "search.confirm_batch=0",
                                                  "--set", "run.snapshots=true"])
    zr = [json.loads(l) for l in files(d)["log.jsonl"].decode().splitlines()]
    snaps = sorted(f for f in os.listdir(d) if f.startswith("out.g") and f.endswith(".h5"))
    # a snapshot exactly where the best validation fell: the start (gen 0), the first logged validation
    # and the final one (their predecessors are not logged), and every logged decrease in between
    vals = [r for r in zr if "val" in r]
    improved = [b["gen"] for a, b in zip(vals, vals[1:]) if b["best_val"] < a["best_val"]]
    allowed = {0, vals[0]["gen"], zr[-1]["gen"], *improved}
    gens = [int(f[5:11]) for f in snaps]
    t.check("snapshots: one per validation improvement, the last equal to the output",
            gens and gens[0] == 0 and all(g in gens for g in improved) and all(g in allowed for g in gens)
            and open(os.path.join(d, snaps[-1]), "rb").read() == files(d)["out.h5"], f"{snaps} {improved}")
    t.check("accept_z 3: every accepted generation has z > 3, every refused one with a z has z <= 3",
            all((r["z"] > 3) == bool(r["accepted"]) for r in zr if "z" in r) and any("z" in r for r in zr), str(zr[:3]))

    # the scalar kernels give the same search
    d = os.path.join(root, "scalar")
    env = dict(os.environ, CCQ_ISA="scalar")
    r = subprocess.run([ccq, "search", setup(d), "--set", "search.group=layer_confidence"], capture_output=True,
                       text=True, env=env)
    d2 = os.path.join(root, "lc_default_isa")
    rc, so, se = search(setup(d2), 1, ["--set", "search.group=layer_confidence"])
    t.check("scalar kernels: runs", r.returncode == 0 and rc == 0, r.stderr[-500:] + se[-500:])
    for n, v in files(d).items():
        t.check(f"scalar kernels: {n} identical to the default ISA's", v == files(d2)[n])

    # ResNet-20 (skip connections cross every cut inside a block) and the every-op network (grouped and
    # depthwise convs searched like any other, concat and mul across cuts): on and off, 1 and 2 ranks
    for mpath in extra_models:
        name = os.path.splitext(os.path.basename(mpath))[0]
        rruns = {}
        for inc, np_ in (("true", 1), ("false", 1), ("true", 2), ("false", 2)):
            d = os.path.join(root, f"{name}_{inc}_{np_}")
            cfg = setup(d, budget=60)
            rc, so, se = search(cfg, np_, ["--set", f"model.model={mpath}", "--set", "quant.first_last_8=false",
                                           "--set", "search.group=layer_confidence", "--set", "search.batch=24",
                                           "--set", "search.confirm_batch=24", "--set", "search.val_images=48",
                                           "--set", "search.lambda=4", "--set", "search.group_size=32",
                                           "--set", "search.accept_z=0.5", "--set", f"run.incremental={inc}"])
            t.check(f"{name}: incremental={inc} on {np_} ranks runs", rc == 0, se[-2000:])
            rruns[(inc, np_)] = files(d)
        for key, got in rruns.items():
            for n in got:
                t.check(f"{name}: incremental={key[0]} on {key[1]} ranks: {n} identical", got[n] == rruns[("true", 1)][n])
        log = [json.loads(x) for x in rruns[("true", 1)]["log.jsonl"].decode().splitlines() if x.strip()]
        t.check(f"{name}: the search accepted changes", log and log[-1].get("accepted_total", 0) > 0, str(log[-1:]))

    # refusals
    other = os.path.join(root, "other")
    cfg_other = setup(other, sseed=4)
    shutil.copy(os.path.join(ref, "ckpt.h5"), os.path.join(other, "ckpt.h5"))
    before = open(os.path.join(other, "ckpt.h5"), "rb").read()
    for label in ("checkpoint of another configuration", "damaged checkpoint", "bad configuration value", "bad --set"):
        t.refusal(label)
    rc, so, se = search(cfg_other, 1, ["--resume", os.path.join(other, "ckpt.h5")])
    t.check("checkpoint of another configuration refused (exit 5)", rc == 5 and "different configuration" in se, se)
    t.check("refused checkpoint untouched", open(os.path.join(other, "ckpt.h5"), "rb").read() == before)
    bad = os.path.join(root, "bad.h5")
    open(bad, "wb").write(before[: len(before) // 2])
    rc, so, se = search(cfg_other, 1, ["--resume", bad])
    t.check("damaged checkpoint refused (exit 4)", rc == 4 and len(se.strip().splitlines()) == 1, se)
    badcfg = os.path.join(root, "bad.ini")
    open(badcfg, "w").write("[search]\nlambda = 8\ngroup = best\n")
    rc, so, se = search(badcfg)
    t.check("bad configuration: exit 2, file:line: key", rc == 2 and f"{badcfg}:3: search.group" in se
            and len(se.strip().splitlines()) == 1, se)
    rc, so, se = search(cfg_other, 1, ["--set", "search.lambda=1"])
    t.check("bad --set: exit 2", rc == 2 and "search.lambda: 1 is outside" in se, se)

    # output paths: checked on rank 0 before any compute, the outcome reaching every rank (2 ranks: a
    # rank left waiting would hang, hence the timeout); nothing written, no input touched
    paths = os.path.join(root, "paths")
    cfg_p = setup(paths)
    model_before = open(model, "rb").read()
    os.makedirs(os.path.join(paths, "adir"))
    os.mkfifo(os.path.join(paths, "fifo"))
    blocker = os.path.join(paths, "afile")
    open(blocker, "w").write("x")
    P = lambda n: os.path.join(paths, n)  # noqa: E731
    cases = [
        ("run.log is the model", ["--set", f"run.log={model}"], 2, ["run.log would overwrite model.model"]),
        ("run.output is the model via ..", ["--set", f"run.output={P('adir')}/../{os.path.relpath(model, paths)}"],
         2, ["run.output would overwrite model.model"]),
        ("run.log is the data", ["--set", f"run.log={data}"], 2, ["run.log would overwrite model.data"]),
        ("run.output is the config", ["--set", f"run.output={cfg_p}"], 2, ["run.output would overwrite the config"]),
        ("run.log is the checkpoint", ["--set", f"run.log={P('ckpt.h5')}"], 2,
         ["run.checkpoint and run.log", "are the same file"]),
        ("run.output is the log's timing file", ["--set", f"run.output={P('log.jsonl')}.time"], 2,
         ["run.log's timing file and run.output", "are the same file"]),
        ("run.log is a directory", ["--set", f"run.log={P('adir')}"], 3, ["run.log is a directory"]),
        ("run.log is a FIFO", ["--set", f"run.log={P('fifo')}"], 3, ["run.log is not a regular file"]),
        ("run.output's folder cannot be made", ["--set", f"run.output={blocker}/sub/out.h5"], 3,
         ["afile/sub/out.h5", "run.output"]),
        ("--resume the model", ["--resume", model, "--set", f"run.output={model}"], 2,
         ["run.output would overwrite model.model"]),
        ("the config is a FIFO", None, 3, ["fifo", "not a regular file"]),
    ]
    for label, extra, code, needles in cases:
        t.refusal(label)
        cmd = MPI + ["2", ccq, "search"] + ([P("fifo")] if extra is None else [cfg_p] + extra)
        try:
            rc, so, se = run(cmd, timeout=60)
        except subprocess.TimeoutExpired:
            t.check(f"2 ranks, {label}: ends", False, "hung for 60 s")
            continue
        t.check(f"2 ranks, {label}: exit {code}", rc == code, f"rc={rc} {se[-600:]}")
        ours = [ln for ln in se.splitlines() if ln.startswith("ccq: ")]
        t.check(f"2 ranks, {label}: one ccq line", len(ours) == 1, se[-600:])
        for n in needles:
            t.check(f"2 ranks, {label}: names '{n}'", any(n in ln for ln in ours), se[-600:])
        t.check(f"2 ranks, {label}: no search output", not any(os.path.exists(P(n)) for n in ("out.h5", "log.jsonl",
                                                                                              "ckpt.h5")))
    t.check("the model file is untouched by every refusal", open(model, "rb").read() == model_before)

    # the search optimises what it says: the context's batch fitness falls from its RTN start
    first = [r for r in recs if r["gen"] <= 5]
    last = [r for r in recs if r["gen"] > len(recs) - 5]
    t.check("fitness falls", sum(r["context"] for r in last) / len(last) < sum(r["context"] for r in first) / len(first),
            f"{[r['context'] for r in first]} -> {[r['context'] for r in last]}")
t.finish()
