#!/usr/bin/env python3
"""test_hosts.py DATA.h5 MODEL.h5: the search on several hosts, over TCP, with a host lost.

Three hosts are built on this machine as network namespaces ccqh1..ccqh3, each with its own UTS
namespace (host name = namespace name), its loopback and one veth (eth0, 10.213.47.N/24) into a
bridge that lives in a fourth namespace (ccqhbr): the root namespace's network is not touched.
Names resolve through /etc/netns/HOST/hosts (which `ip netns exec` bind-mounts over /etc/hosts).
`mpirun` runs inside ccqh1 with Open MPI's TCP transport only (pml ob1, btl tcp,self, both TCP
layers restricted to the veth subnet), a hostfile, and an rsh agent that "logs in" to a host by
entering its namespaces (the role ssh plays on a cluster). The hosts' TCP gives up on an unanswered
connection after 4 retransmissions (net.ipv4.tcp_retries2, per namespace; see TCP_RETRIES2).

Checked: a 3-host search (one rank per host) writes the model, log and checkpoint of a 1-host
run of the same configuration, bit for bit; a 3-host search whose host 3 loses its link (eth0
down, after the first checkpoint) ends by itself within run.stall_timeout plus a margin, with
rank 0's watchdog line naming rank 2 and exit 8 (passed through by mpirun), nothing left on
hosts 1 and 2, and `--resume auto` on the two remaining hosts then finishes bit-identical to the
uninterrupted run. Namespaces, veths, bridge, /etc/netns entries, the working folder and every
process left inside the namespaces are removed at the end, even on failure or SIGINT/SIGTERM/
SIGHUP; what a run killed outright left is removed by the next run first. A lock on this file
keeps two runs from sharing the hosts.

Printed for the record: wall-clock of the 1-host and 3-host runs, bytes on the wire per
generation (the hosts' veth counters), and LOG.time's mpi_bytes_rank0.

Needs root, iproute2 (ip netns, veth, bridge), util-linux (unshare, nsenter) and Open MPI; a
machine without them is a skip (exit 77). `test_hosts.py --up` / `--down` only build / remove the
hosts (for looking around by hand: `nsenter --uts=/run/ccq-hosts/uts/ccqh1 ip netns exec ccqh1 bash`).
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ccqtest import Checks, ccq_binary, run, search_ini  # noqa: E402

HOSTS = ("ccqh1", "ccqh2", "ccqh3")
BRNS = "ccqhbr"                     # the namespace holding the bridge (the "switch")
NET = "10.213.47"                   # a private /24 used only inside these namespaces
SUBNET = NET + ".0/24"
STATE = "/run/ccq-hosts"            # the hosts' UTS namespaces, bind-mounted to files
ETC = "/etc/netns"
# When a host is lost, Open MPI 4.1's mpirun learns it only when TCP gives up on the connection to
# that host's orted: the run's processes end by ccq's watchdog, mpirun then orders every orted to
# kill its processes and waits for each to answer; the lost host's never does, and keepalives
# (oob_tcp_keepalive_*) are not sent while that order sits unacknowledged. With Linux's default
# net.ipv4.tcp_retries2 = 15 that takes about 15 minutes (measured: mpirun ended 940 s after the cut);
# the hosts here (a per-namespace setting: the machine's own is untouched) give up after 4.
TCP_RETRIES2 = 4
SKIP = 77


def sh(*cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def addr(h):
    return f"{NET}.{HOSTS.index(h) + 1}"


def uts(h):
    return f"{STATE}/uts/{h}"


def on(h, *cmd):
    """The command line running CMD on host H: its UTS namespace, then its network namespace (with
    /etc/netns/H/* over /etc)."""
    return ["nsenter", f"--uts={uts(h)}", "ip", "netns", "exec", h, *cmd]


def ns_pids(ns):
    p = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def kill_inside(nss):
    """SIGKILLs every process inside the namespaces NSS (mpirun, orted, ccq started by this test),
    until none is left (a few seconds at most)."""
    kill_until_gone(lambda: [pid for ns in nss for pid in ns_pids(ns) if pid != os.getpid()])


def kill_until_gone(find):
    """SIGKILLs the processes find() names until it names none (5 s at most)."""
    for _ in range(50):
        pids = find()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def stray_pids():
    """Processes whose host name (UTS namespace) is one of HOSTS: what a run killed before its
    clean-up left, even once its network namespaces lost their names."""
    mine = os.stat("/proc/self/ns/uts").st_ino
    by_ns = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                by_ns.setdefault(os.stat(f"/proc/{p}/ns/uts").st_ino, []).append(int(p))
            except OSError:
                pass
    out = []
    for ino, pids in by_ns.items():
        if ino == mine:
            continue
        for pid in pids:  # the first one still alive tells the namespace's host name
            q = sh("nsenter", "-t", str(pid), "--uts", "hostname", check=False)
            if q.returncode == 0:
                if q.stdout.strip() in HOSTS:
                    out += pids
                break
    return out


def hosts_down():
    """Removes everything hosts_up makes and every process left on the hosts; harmless when
    nothing is there."""
    have = set(sh("ip", "netns", "list", check=False).stdout.split())
    ours = [n for n in (*HOSTS, BRNS) if n in have]
    kill_inside(ours)
    kill_until_gone(stray_pids)
    for n in ours:
        sh("ip", "netns", "del", n, check=False)  # takes its veth ends and the bridge with it
    for h in HOSTS:
        if os.path.exists(uts(h)):
            sh("umount", uts(h), check=False)
            try:
                os.unlink(uts(h))
            except OSError:
                pass
        d = os.path.join(ETC, h)
        if os.path.isdir(d):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)
    for d in (f"{STATE}/uts", STATE, ETC):
        try:
            os.rmdir(d)
        except OSError:
            pass


TMP_PREFIX = "ccq-hosts."  # the test's working folder in the temporary directory


def sweep():
    """hosts_down, and whatever an earlier run killed outright left outside the hosts: processes
    naming its working folder (the 1-host run's mpirun and ccq), and the folder."""
    hosts_down()
    mark = os.path.join(tempfile.gettempdir(), TMP_PREFIX).encode()
    for _ in range(50):
        pids = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != os.getpid():
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if mark in f.read():
                            pids.append(int(p))
                except OSError:
                    pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for d in os.listdir(tempfile.gettempdir()):
        if d.startswith(TMP_PREFIX):
            subprocess.run(["rm", "-rf", os.path.join(tempfile.gettempdir(), d)])


def hosts_up():
    hosts_down()
    sh("ip", "netns", "add", BRNS)
    sh("ip", "-n", BRNS, "link", "set", "lo", "up")
    sh("ip", "-n", BRNS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BRNS, "link", "set", "br0", "up")
    os.makedirs(f"{STATE}/uts", exist_ok=True)
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{addr(h)} {h}\n" for h in HOSTS)
    for i, h in enumerate(HOSTS, 1):
        sh("ip", "netns", "add", h)
        sh("ip", "-n", h, "link", "set", "lo", "up")
        # the veth pair: eth0 in the host, p<i> on the bridge
        sh("ip", "-n", BRNS, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", h)
        sh("ip", "-n", BRNS, "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "-n", h, "addr", "add", f"{addr(h)}/24", "dev", "eth0")
        sh("ip", "-n", h, "link", "set", "eth0", "up")
        # TCP gives up on an unanswered connection after 4 retransmissions (~6-9 s here) instead of
        # Linux's 15 (~15 min): see TCP_RETRIES2 above
        sh("ip", "netns", "exec", h, "sysctl", "-q", "-w", f"net.ipv4.tcp_retries2={TCP_RETRIES2}")
        open(uts(h), "w").close()
        sh("unshare", f"--uts={uts(h)}", "hostname", h)
        os.makedirs(os.path.join(ETC, h), exist_ok=True)
        with open(os.path.join(ETC, h, "hosts"), "w") as f:
            f.write(hosts_file)
        with open(os.path.join(ETC, h, "hostname"), "w") as f:
            f.write(h + "\n")


def link(h, state):
    sh("ip", "-n", h, "link", "set", "eth0", state)


def wire_bytes():
    """(tx, rx) bytes of every host's eth0, by host."""
    out = {}
    for h in HOSTS:
        st = json.loads(sh("ip", "-n", h, "-s", "-j", "link", "show", "eth0").stdout)[0]["stats64"]
        out[h] = (st["tx"]["bytes"], st["rx"]["bytes"])
    return out


AGENT = r"""#!/bin/sh
# plm_rsh_agent of tests/test_hosts.py: "ssh HOST COMMAND" to a host that is a network namespace of
# this machine: enter its UTS and network namespaces and run COMMAND through a shell, in a fresh
# environment, as sshd would.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
h=$1; shift
exec nsenter --uts=%s/uts/"$h" ip netns exec "$h" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" SHELL=/bin/sh /bin/sh -c "$*"
""" % STATE


def write_agent(d):
    p = os.path.join(d, "agent.sh")
    with open(p, "w") as f:
        f.write(AGENT)
    os.chmod(p, 0o755)
    return p


def write_hostfile(d, hosts):
    p = os.path.join(d, "hostfile." + str(len(hosts)))
    with open(p, "w") as f:
        f.write("".join(f"{h} slots=1\n" for h in hosts))
    return p


# ---- the test ---------------------------------------------------------------------------------

NAMES = ("out.h5", "log.jsonl", "ckpt.h5")
BOUND = 5        # run.stall_timeout of the run whose host 3 is cut, seconds
# The cut run must end within BOUND + MARGIN s of the cut. Measured (2 cores, loaded or not): 13.9-14.0 s,
# rank 0's watchdog line at +5.0 s, then ~9 s for mpirun's TCP to give up on host 3's orted (TCP_RETRIES2).
MARGIN = 15


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in NAMES}


def mpirun_hosts(agent, hostfile, np_, *cmd):
    """mpirun inside host 1 across the hosts of HOSTFILE, TCP only, one rank per host."""
    return on(HOSTS[0], "mpirun", "-q", "--hostfile", hostfile, "-np", str(np_), "--map-by", "node",
              "--bind-to", "none", "--mca", "pml", "ob1", "--mca", "btl", "tcp,self",
              "--mca", "btl_tcp_if_include", SUBNET, "--mca", "oob_tcp_if_include", SUBNET,
              "--mca", "plm_rsh_agent", agent, "--mca", "plm_rsh_no_tree_spawn", "1", *cmd)


def wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path) and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)
    return proc.poll() is None and os.path.exists(path)


def generations(d):
    with open(os.path.join(d, "log.jsonl")) as f:
        return f.read().count("\n")  # whole lines only


def last_time_record(d):
    with open(os.path.join(d, "log.jsonl.time")) as f:
        return json.loads([ln for ln in f if ln.strip()][-1])


def interrupted(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally that removes the hosts


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: test_hosts.py DATA.h5 MODEL.h5 (or --up / --down)")
    data, model = sys.argv[1], sys.argv[2]
    ccq = ccq_binary()
    if os.geteuid() != 0:
        print("hosts: skipped: needs root (network and UTS namespaces)")
        sys.exit(SKIP)
    for tool in ("ip", "nsenter", "unshare", "mpirun"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"hosts: skipped: no {tool}")
            sys.exit(SKIP)
    v = subprocess.run(["mpirun", "--version"], capture_output=True, text=True)
    if not any(k in v.stdout + v.stderr for k in ("Open MPI", "OpenRTE", "open-mpi")):
        print("hosts: skipped: the launcher is not Open MPI's (the test uses its MCA parameters)")
        sys.exit(SKIP)

    t = Checks("hosts")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)
    sweep()  # an earlier run's leftovers
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX)
    try:
        try:
            hosts_up()
        except RuntimeError as e:  # root without the right to make namespaces (a container)
            print(f"hosts: skipped: cannot build the hosts: {e}")
            sweep()
            sys.exit(SKIP)
        agent = write_agent(tmp)
        hf3, hf2 = write_hostfile(tmp, HOSTS), write_hostfile(tmp, HOSTS[:2])

        rc, so, se = run(mpirun_hosts(agent, hf3, 3, "hostname"), timeout=60)
        t.check("mpirun reaches the 3 hosts, one rank each", rc == 0 and sorted(so.split()) == list(HOSTS),
                (rc, so, se))

        # the reference: one host (this machine's own namespace, Open MPI's defaults), 3 ranks
        ref = os.path.join(tmp, "ref")
        t0 = time.time()
        rc, so, se = run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "3", ccq, "search",
                          search_ini(ref, model, data, run={"budget": 800})], timeout=300)
        t_one = time.time() - t0
        t.check("1-host reference runs", rc == 0, se[-800:])
        want = files(ref)

        # the same search across the 3 hosts, over TCP; the veth counters read at the start, at each
        # checkpoint (where the log is flushed: its lines count the generations) and at the end
        h3 = os.path.join(tmp, "h3")
        cfg = search_ini(h3, model, data, run={"budget": 800})
        samples, seen = [], None
        before = wire_bytes()
        t0 = time.time()
        p = subprocess.Popen(mpirun_hosts(agent, hf3, 3, ccq, "search", cfg), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out = []  # drained by threads: a full pipe must not stall the run
        drain = [threading.Thread(target=lambda f=f: out.append((f, f.read()))) for f in (p.stdout, p.stderr)]
        for d in drain:
            d.start()
        while p.poll() is None and time.time() - t0 < 300:
            try:
                m = os.stat(os.path.join(h3, "ckpt.h5")).st_mtime_ns
            except OSError:
                m = None
            if m is not None and m != seen:
                seen = m
                samples.append((generations(h3), wire_bytes()))
            time.sleep(0.02)
        if p.poll() is None:
            p.kill()
        rc = p.wait()
        t_three = time.time() - t0
        for d in drain:
            d.join()
        so, se = (dict(out).get(f, "") for f in (p.stdout, p.stderr))
        after = wire_bytes()
        t.check("3-host run", rc == 0 and "search: 3 ranks" in so, (rc, so[:300], se[-800:]))
        t.check("3-host run = 1-host run, bit for bit (model, log, checkpoint)", rc == 0 and files(h3) == want)
        gens = generations(h3)
        sent = lambda a, b: sum(b[h][0] - a[h][0] for h in HOSTS)  # noqa: E731
        host1 = lambda a, b: sum(b[HOSTS[0]][i] - a[HOSTS[0]][i] for i in (0, 1))  # noqa: E731
        mpi0, mpi0_one = last_time_record(h3).get("mpi_bytes_rank0"), last_time_record(ref).get("mpi_bytes_rank0")
        print(f"hosts: 1-host run {t_one:.1f} s, 3-host run {t_three:.1f} s ({gens} generations)")
        print(f"hosts: on the wire (veth frames, headers included), whole 3-host run: {sent(before, after)} bytes "
              f"sent by the 3 hosts ({sent(before, after) / gens:.0f} per generation), host 1 (rank 0) sent + "
              f"received {host1(before, after)} ({host1(before, after) / gens:.0f} per generation)")
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            (g0, a), (g1, b) = samples[0], samples[-1]
            print(f"hosts: between the checkpoints of generations {g0} and {g1} (no launch, wire-up or end): "
                  f"{sent(a, b) / (g1 - g0):.0f} bytes per generation sent by the 3 hosts, host 1 (rank 0) "
                  f"{host1(a, b) / (g1 - g0):.0f} sent + received")
        print(f"hosts: LOG.time mpi_bytes_rank0: {mpi0} on 3 hosts ({(mpi0 or 0) / gens:.0f} per generation), "
              f"{mpi0_one} on 1 host")

        # host 3 loses its link after the first checkpoint
        cut = os.path.join(tmp, "cut")
        cfg = search_ini(cut, model, data, run={"budget": 800, "stall_timeout": BOUND})
        p = subprocess.Popen(mpirun_hosts(agent, hf3, 3, ccq, "search", cfg), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ok = wait_for(os.path.join(cut, "ckpt.h5"), p)
        t.check("the cut run writes its first checkpoint", ok, p.poll())
        if ok:
            link(HOSTS[2], "down")
        t0 = time.time()
        try:
            so, se = p.communicate(timeout=BOUND + MARGIN + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
        took = time.time() - t0
        print(f"hosts: link of {HOSTS[2]} cut after the first checkpoint: mpirun returned {p.returncode} "
              f"{took:.1f} s later; its stderr: {se.strip()!r}")
        t.check(f"the cut run ends within the bound ({BOUND} s) + {MARGIN} s", took < BOUND + MARGIN, took)
        t.check("exit 8 (the watchdog's, through mpirun)", p.returncode == 8, (p.returncode, se[-800:]))
        named = [ln for ln in se.splitlines()
                 if ln.startswith("ccq: search stalled in generation ") and "no answer from rank 2 " in ln]
        t.check("rank 0's watchdog line names rank 2 (host 3)", len(named) == 1, se[-800:])
        time.sleep(1)
        left = {h: ns_pids(h) for h in HOSTS}
        t.check("nothing left on hosts 1 and 2", not left[HOSTS[0]] and not left[HOSTS[1]], left)
        print(f"hosts: left on {HOSTS[2]} (unreachable, killed by the test): "
              + (", ".join(open(f"/proc/{pid}/comm").read().strip() for pid in left[HOSTS[2]]
                           if os.path.exists(f"/proc/{pid}/comm")) or "nothing"))
        kill_inside([HOSTS[2]])  # host 3 is gone for good

        # --resume auto on the two hosts that remain
        rc, so, se = run(mpirun_hosts(agent, hf2, 2, ccq, "search", cfg, "--resume", "auto"), timeout=300)
        t.check("--resume auto on hosts 1 and 2 continues", rc == 0 and "continuing from" in so, (rc, se[-800:]))
        t.check("... and ends bit-identical to the uninterrupted run", rc == 0 and files(cut) == want)
    finally:
        sweep()  # the hosts, any process naming tmp (the 1-host run's, if interrupted), tmp
    gone = (not set(sh("ip", "netns", "list", check=False).stdout.split()) & {*HOSTS, BRNS}
            and not any(os.path.exists(os.path.join(ETC, h)) for h in HOSTS) and not os.path.exists(STATE)
            and not stray_pids() and not os.path.exists(tmp))
    t.check("namespaces, /etc/netns entries, processes and the working folder removed", gone)
    t.finish()


if __name__ == "__main__":
    # one user of the hosts at a time (a second run would tear down the first's): a lock on this file
    lock = open(os.path.abspath(__file__))
    fcntl.flock(lock, fcntl.LOCK_EX)
    if sys.argv[1:] == ["--up"]:
        hosts_up()
    elif sys.argv[1:] == ["--down"]:
        sweep()
    else:
        main()
