"""ccqtest.py: the few helpers the Python tests share: run the ccq binary,
record checks, and finish with the plain 'N passed, N failed' line ctest
output is read for. Each check prints what it compared when it fails."""
import os
import subprocess
import sys


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
