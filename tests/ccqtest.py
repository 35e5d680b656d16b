"""ccqtest.py: the few helpers the Python tests share: run the ccq binary,
record checks, and finish with the plain 'N passed, N failed' line ctest
output is read for. Each check prints what it compared when it fails."""
import os
import signal
import subprocess
import sys
import time


class Checks:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0
        self.refused = set()  # labels of the malformed inputs tried (results/reliability.md counts them)

    def refusal(self, label):
        """Records one distinct bad input (file, config or flag) that the test expects ccq to refuse."""
        self.refused.add(label)

    def check(self, label, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {label}: {detail}", flush=True)

    def finish(self):
        if self.refused:
            print(f"{self.name}: {len(self.refused)} malformed inputs refused")
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed or not self.passed else 0)


def run(cmd, **kw):
    """Run a command; return (exit code, stdout, stderr)."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return p.returncode, p.stdout, p.stderr


def ccq_binary():
    b = os.environ.get("CCQ_BIN")
    if not b or not os.path.exists(b):
        sys.exit(f"CCQ_BIN must point at the ccq binary (got {b!r})")
    return b


SEARCH_DEFAULTS = {
    "quant": {"wbits": 2, "first_last_8": "true", "calib_images": 256},
    "search": {"seed": 3, "lambda": 8, "mu": 2, "group": "confidence", "group_size": 64, "batch": 128,
               "confirm_batch": 128, "val_images": 1000},
    "run": {"checkpoint_every": 4, "budget": 400},
}


def search_ini(d, model, data, **sections):
    """Writes D/search.ini: a small search of MODEL on DATA writing out.h5, log.jsonl and ckpt.h5 in D,
    with SEARCH_DEFAULTS updated by sections (e.g. run={"budget": 800}); returns its path."""
    os.makedirs(d, exist_ok=True)
    keys = {s: dict(v) for s, v in SEARCH_DEFAULTS.items()}
    keys["model"] = {"model": model, "data": data}
    keys["run"].update(output=f"{d}/out.h5", log=f"{d}/log.jsonl", checkpoint=f"{d}/ckpt.h5")
    for s, v in sections.items():
        keys.setdefault(s, {}).update(v)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in keys[s].items())
                   for s in ("model", "quant", "search", "run") if s in keys)
    p = os.path.join(d, "search.ini")
    with open(p, "w") as f:
        f.write(text)
    return p


def stop_after_checkpoint(cmd, ckpt, timeout=60.0):
    """Starts cmd (one ccq process, no launcher), sends it SIGTERM once the checkpoint file ckpt
    exists (or it has ended) and returns (exit code, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time() + timeout
    while not os.path.exists(ckpt) and p.poll() is None and time.time() < end:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate()
    return p.returncode, err


def rank_pids(root_pid, rank):
    """Process ids, among root_pid's descendants, of the MPI rank `rank` (Open MPI or MPICH)."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root_pid]  # a depth-first walk of root_pid's descendants
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            todo.append(c)  # its own children are looked at later
            try:
                with open(f"/proc/{c}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env or f"PMI_RANK={rank}".encode() in env:
                out.append(c)
    return out


def h5_contents(path, skip_attrs=(), skip_datasets=()):
    """Every attribute and dataset of an HDF5 file as bytes, keyed by path (attributes as
    PATH@NAME), but attributes named in skip_attrs and datasets whose name ends with one of
    skip_datasets: for comparing two model files apart from what a command may change."""
    import h5py
    import numpy as np
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                if k not in skip_attrs:
                    out[f"{name}@{k}"] = v if isinstance(v, (str, bytes)) else np.asarray(v).tobytes()
            if isinstance(obj, h5py.Dataset) and not name.endswith(tuple(skip_datasets)):
                out[name] = obj[...].tobytes()
        f.visititems(visit)
    return out


def layer_bytes(g):
    """Deployed bytes of the levels of a conv/linear node group g of a model file, counted from its
    datasets independently of ccq: ceil(n bits / 8) packed (a codebook's codes likewise), or, for a
    node marked sparse without a codebook where it is smaller, a bitmap (ceil(n / 8)), the non-zero
    levels' codes (1 bit at 2 bits, else bits) and 4 bytes of row index per output channel."""
    lev, bits = g["levels"][...], int(g.attrs["bits"])
    dense = -(-lev.size * bits // 8)
    sparse = -(-lev.size // 8) + -(-int((lev != 0).sum()) * (1 if bits == 2 else bits) // 8) + 4 * lev.shape[0]
    return sparse if int(g.attrs.get("sparse", 0)) and "codebook" not in g and sparse < dense else dense


def prune_act_copy(t, ccq, q, data, max_drop, images=256):
    """`ccq prune-act` on quantized model q into q's name + _pruned.h5 (None on failure), checking
    that at least two nodes got a threshold; prints how many, and how many at a non-zero zero point."""
    import h5py
    qp = q[:-3] + "_pruned.h5"
    rc, so, se = run([ccq, "prune-act", q, "--data", data, "--images", str(images), "--max-drop", max_drop, "-o", qp])
    t.check(f"prune-act --max-drop {max_drop}", rc == 0, se)
    if rc:
        return None
    with h5py.File(qp, "r") as f:
        th = [(int(g.attrs.get("act_thresh", 0)), int(g.attrs["act_zp"])) for g in f["nodes"].values()]
    n, nz = sum(v > 0 for v, _ in th), sum(v > 0 and z != 0 for v, z in th)
    print(f"  prune-act: {n} nodes with a threshold ({nz} of them with a non-zero zero point)")
    t.check("prune-act: at least two nodes with an activation threshold", n >= 2, f"{n}")
    return qp
