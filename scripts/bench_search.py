#!/usr/bin/env python3
"""bench_search.py [--quick]: the search's speed with incremental evaluation on
and off, written to results/search_speed.md:

1. per layer position of ResNet-20 (2-bit, batch 1,024, one rank): a
   generation of 32 individuals and the context evaluated from the layer on
   (the prefix once, 33 passes from the layer) against 33 whole forward
   passes (`ccq bench --cuts 32`), with the cache's bytes per image;
2. averaged over real searches with the shipped configurations (2 ranks;
   ResNet-20 and lenet at w2a8 from their round-to-nearest start, which
   costs the same per evaluation as any start): evaluations/s from the
   timing side file, incremental on and off in the same run of this
   script, and the cache's memory;
3. the off/on pair must give bit-identical logs (checked here too, not
   only in the tests);
4. racing (search.race_z, a different search, not a speed-only switch):
   the same search with incremental evaluation on and racing at
   race_z = RACE_Z, reported as generations/s and individuals decided per
   second (lambda a generation, raced out or not) beside the whole-batch
   passes per second.

One evaluation = one forward pass of a fitness batch (the unit of
run.budget). Run it alone on the machine: it measures wall-clock."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import commit, cpu_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CCQ = os.path.join(ROOT, "build", "ccq")
DATA = os.path.join(ROOT, "build", "data", "fashion-mnist.h5")
RUNS = [("resnet20", "configs/resnet20_w2a8.ini", 2400), ("lenet", "configs/lenet_w2a8.ini", 6000)]
RACE_Z = "0.5"


def rel(c):
    return os.path.relpath(c, ROOT) if c.startswith(ROOT) else c


def search(cfg, np_, budget, d, inc, race="0"):
    cmd = ["mpirun", "--oversubscribe", "-np", str(np_), CCQ] if np_ > 1 else [CCQ]
    # the float model: the [quant] keys give the round-to-nearest start (same cost per evaluation as GPTQ's)
    name = os.path.basename(cfg).split("_")[0]
    cmd += ["search", os.path.join(ROOT, cfg), "--set", f"model.model=results/models/{name}.h5",
            "--set", f"run.budget={budget}", "--set", f"run.incremental={inc}", "--set", f"search.race_z={race}", "--set", f"run.output={d}/m.h5",
            "--set", f"run.log={d}/log.jsonl", "--set", f"run.checkpoint={d}/ckpt.h5"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench_search: {' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    last = [json.loads(l) for l in open(f"{d}/log.jsonl.time")][-1]
    log = open(f"{d}/log.jsonl").read()
    last["generations_per_s"] = last["gen"] / last["elapsed"]
    last["lambda"] = int(next(l.split("=")[1] for l in r.stdout.splitlines() if l.replace(" ", "").startswith("lambda=")))
    return last, log, " ".join(rel(c) for c in cmd)


def main():
    # Open MPI refuses root without these (as scripts/env.sh sets them)
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    quick = "--quick" in sys.argv
    cmds = []
    # 1. per layer
    bcmd = [CCQ, "bench", os.path.join(ROOT, "results/models/resnet20.h5"), "--data", DATA, "--wbits", "2",
            "--batch", "256" if quick else "1024", "--ms", "500" if quick else "3000", "--cuts", "32", "--json"]
    r = subprocess.run(bcmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"bench_search: {' '.join(bcmd)} failed: {r.stderr.strip()}")
    lines = r.stdout.strip().splitlines()
    whole, cuts = json.loads(lines[0]), json.loads(lines[1])
    cmds.append(" ".join(rel(c) for c in bcmd))
    n_w = sum(c["weights"] for c in cuts["cuts"])
    # what a layer-at-a-time search spends: layers visited in proportion to their weights
    t_mix = sum(c["weights"] / n_w * c["seconds"] for c in cuts["cuts"])
    t_full = cuts["cuts"][0]["seconds_full"]
    t_eq = sum(c["seconds"] for c in cuts["cuts"]) / len(cuts["cuts"])
    rows, race_rows = [], []
    for np_ in (2,):
        for name, cfg, budget in RUNS:
            if quick:
                budget //= 10
            res = {}
            for inc in ("false", "true"):
                with tempfile.TemporaryDirectory() as d:
                    t, log, cmd = search(cfg, np_, budget, d, inc)
                res[inc] = (t, log)
                cmds.append(cmd)
                print(f"bench_search: {name} incremental={inc}: {t['evaluations_per_s']:.1f} evaluations/s", flush=True)
            with tempfile.TemporaryDirectory() as d:
                race, _, cmd = search(cfg, np_, budget, d, "true", RACE_Z)
            cmds.append(cmd)
            same = res["true"][1] == res["false"][1]
            if not same:
                sys.exit(f"bench_search: {name}: the logs with incremental on and off differ")
            off, on = res["false"][0], res["true"][0]
            rows.append(f"| {name} w2a8 ({os.path.basename(cfg)}) | {np_} | {budget} | {off['evaluations_per_s']:.1f} | "
                        f"{on['evaluations_per_s']:.1f} | **{on['evaluations_per_s'] / off['evaluations_per_s']:.2f}x** | "
                        f"{on['cache_bytes'] / 2**20:.1f} MiB | {off['elapsed']:.1f} s / {on['elapsed']:.1f} s | "
                        f"{'identical' if same else 'DIFFERENT'} |")
            print(rows[-1], flush=True)
            lam = off["lambda"]
            race_rows.append(
                f"| {name} w2a8 | {np_} | {budget} | {off['generations_per_s']:.2f} / {on['generations_per_s']:.2f} / "
                f"**{race['generations_per_s']:.2f}** | {off['generations_per_s'] * lam:.0f} / "
                f"{on['generations_per_s'] * lam:.0f} / **{race['generations_per_s'] * lam:.0f}** | "
                f"**{race['generations_per_s'] / off['generations_per_s']:.2f}x** | {race['evaluations_per_s']:.1f} |")
            print(race_rows[-1], flush=True)
    out = os.path.join(ROOT, "results", "search_speed.md")
    with open(out + ".tmp", "w") as f:
        f.write("# Search speed: incremental evaluation\n\n")
        f.write(f"Measured by `scripts/bench_search.py{' --quick' if quick else ''}` (commit {commit(ROOT)}, CPU "
                f"{cpu_model()}, {os.cpu_count()} cores, {whole['isa']} kernels). One evaluation = one forward pass of a "
                "fitness batch, the unit of `run.budget`. Incremental evaluation is exact: every pair of runs below "
                "wrote the same log byte for byte (checked by this script; the `search` test checks model, log and "
                "checkpoint for every grouping mode on 1-4 ranks).\n\n")
        f.write("## Averaged over real searches (shipped configurations, 2 ranks, same run of this script)\n\n")
        f.write("| search | ranks | evaluations | evaluations/s, incremental off | on | speed-up | cache memory per "
                "rank | wall-clock off / on | logs |\n|---|---|---|---|---|---|---|---|---|\n")
        f.write("\n".join(rows) + "\n\n")
        f.write(f"## Racing (`search.race_z = {RACE_Z}`, 4 stages), same run of this script\n\n"
                "A different search (individuals clearly worse than the context after a stage are not run on the "
                "rest of the batch), so its log is not the others'; what a generation costs: generations/s and "
                "individuals decided per second (lambda a generation) with incremental evaluation off / on / on "
                "with racing, and the racing run's whole-batch passes per second (its `evaluations`).\n\n"
                "| search | ranks | evaluations | generations/s off / on / racing | individuals/s off / on / racing | "
                "racing against off | whole-batch passes/s, racing |\n|---|---|---|---|---|---|---|\n")
        f.write("\n".join(race_rows) + "\n\n")
        f.write(f"## Per layer position, ResNet-20 at 2 bits, one rank, batch {cuts['images']}\n\n")
        f.write(f"A generation of {cuts['individuals']} individuals and the context ({cuts['individuals'] + 1} "
                f"evaluations) whose subcomponent lies in the layer: the prefix up to the layer once, then "
                f"{cuts['individuals'] + 1} passes from the layer, against {cuts['individuals'] + 1} whole passes "
                f"({t_full:.3f} s, {(cuts['individuals'] + 1) / t_full:.1f} evaluations/s). Best of 3.\n\n")
        f.write("| node | layer | weights | seconds per generation | evaluations/s | speed-up | cache bytes per image |\n"
                "|---|---|---|---|---|---|---|\n")
        for c in cuts["cuts"]:
            f.write(f"| {c['node']} | `{c['name']}` | {c['weights']} | {c['seconds']:.3f} | "
                    f"{(cuts['individuals'] + 1) / c['seconds']:.1f} | {c['speedup']:.2f}x | {c['cache_bytes_per_image']} |\n")
        f.write(f"\nWeighted by each layer's share of the weights (how often `layer_confidence` visits it): "
                f"{t_mix:.3f} s per generation, **{t_full / t_mix:.2f}x** the whole-network cost; every layer the "
                f"same share (`layer_turns = equal`, the shipped ResNet-20 config): {t_eq:.3f} s, "
                f"**{t_full / t_eq:.2f}x**. The cache "
                f"for the worst cut of {cuts['images']} images: {cuts['cache_bytes'] / 2**20:.1f} MiB "
                "(`run.cache_mb` bounds it; a smaller bound splits the batch into chunks, same results).\n\n")
        f.write("Commands:\n\n```\n" + "\n".join(cmds) + "\n```\n")
    os.replace(out + ".tmp", out)
    print(f"bench_search: wrote {out}")


if __name__ == "__main__":
    main()
