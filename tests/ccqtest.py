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
