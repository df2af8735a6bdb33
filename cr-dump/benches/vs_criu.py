#!/usr/bin/env python3
"""cr-dump against CRIU 4.2, side by side, rounds interleaved (issue 14).

Each round starts a fresh target (tests/programs/bench_sum.c: MIB mebibytes, every page
non-zero, a checksum of it written to a file), then, in an order that rotates from round to
round:
  cr-dump checkpoint (lazy, the default), cr-dump checkpoint --direct,
  criu dump --leave-running --shell-job --display-stats;
kills the target, then (the order alternating) `cr-dump restore --detach` of the lazy image and
`criu restore -d --shell-job` of CRIU's, each restored task asked (SIGUSR1) for the checksum of
its whole memory, which must equal the original's. Measured per command: wall time, CPU seconds
of the tool and all its threads and children (getrusage of children), the CPU the target itself
spends meanwhile (/proc/PID/stat: CRIU's parasite runs in it; cr-dump's injected calls too),
counted with cr-dump's twin's CPU (`--json` twin_cpu_ms: the twin is the task's fork, neither
cr-dump's child nor the task, and runs the injected `vmsplice` calls), downtime (`--json` downtime_ms; CRIU's "Frozen time").

    sudo python3 cr-dump/benches/vs_criu.py [--rounds 5] [--mib 1024] [--busy 2]
         [--bin target/release/cr-dump] [--criu PATH] [--only cr|criu] [--work DIR]

--lazy adds the lazy restores: `cr-dump restore --lazy --detach` and CRIU's `criu lazy-pages` +
`criu restore --lazy-pages`, each timed to the task running (the restore command returns) and
to every page in (cr-dump: the task no longer traced, /proc/PID/status TracerPid 0; CRIU: its
lazy-pages daemon ends), then checked as the others.

--busy N starts N `yes > /dev/null` loops for the whole run. CRIU is taken from --criu, $CRIU,
../shared/peers/criu (beside the repository or its parent) or `criu` on PATH; when it is absent
the CRIU rows are skipped and said so. Root is needed (CRIU; cr-dump's restore of credentials).
"""
import argparse, ctypes, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "../.."))
TICK = os.sysconf("SC_CLK_TCK")


def find_criu(arg):
    cands = [arg, os.environ.get("CRIU"),
             os.path.join(REPO, "../shared/peers/criu"),
             os.path.join(REPO, "../../shared/peers/criu"), shutil.which("criu")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def task_cpu(pid):
    """utime + stime of a live task, seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def timed(cmd, pid=None):
    """Runs cmd; returns (CompletedProcess, wall s, tool CPU s, target CPU s)."""
    subprocess.run(["sync"])
    time.sleep(0.3)
    k0 = task_cpu(pid) if pid else 0.0
    t0, c0 = time.monotonic(), os.times()
    o = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    t1, c1 = time.monotonic(), os.times()
    k1 = task_cpu(pid) if pid else 0.0
    cpu = c1.children_user - c0.children_user + c1.children_system - c0.children_system
    return o, t1 - t0, cpu, max(0.0, k1 - k0)


def wait_sum(sumdir, pid, timeout=60.0):
    path = os.path.join(sumdir, f"sum.{pid}")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path) as f:
                s = f.read().strip()
            if s:
                os.remove(path)
                return s
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"no checksum from pid {pid} within {timeout} s ({path})")


def reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:  # we are a child subreaper: detached restored tasks end up our children
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def check_restored(sumdir, pid, want, who):
    os.kill(pid, signal.SIGUSR1)
    got = wait_sum(sumdir, pid)
    reap(pid)
    if got != want:
        raise SystemExit(f"{who}: restored memory differs: checksum {got}, original {want}")


def tracer_pid(pid):
    """TracerPid of a live task (0 when not traced or gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def lazy_restore(name, a, criu, images, orig_pid, sumdir, want, add):
    """A lazy restore: wall time to the task running, then to every page in; checked."""
    subprocess.run(["sync"])
    time.sleep(0.3)
    daemon = None
    if name == "criu lazy restore":
        d = images["criu dump"]
        daemon = subprocess.Popen([criu, "lazy-pages", "-D", d, "-o", "lazy-pages.log"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # its socket up (CRIU's restore fails without it)
        cmd = [criu, "restore", "-d", "-D", d, "--shell-job", "--lazy-pages", "-o",
               "restore-lazy.log"]
    elif name == "base lazy restore":
        cmd = [a.base, "restore", "--lazy", "--detach", images["base lazy"]]
    else:
        cmd = [a.bin, "restore", "--lazy", "--detach", images["cr lazy"]]
    t0 = time.monotonic()
    o = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    t1 = time.monotonic()
    if o.returncode != 0:
        if daemon:
            daemon.kill()
        raise SystemExit(f"{name} failed ({o.returncode}): {o.stderr}{o.stdout}")
    pid = orig_pid if daemon else int(o.stdout.split()[-1])
    if daemon:
        daemon.wait(120)
    else:
        end = time.monotonic() + 120
        while tracer_pid(pid) != 0 and time.monotonic() < end:
            time.sleep(0.0005)
    t2 = time.monotonic()
    check_restored(sumdir, pid, want, name)
    add(name, wall=t1 - t0, filled=t2 - t0, cpu=0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--busy", type=int, default=0, help="busy loops competing for the cores")
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/cr-dump"))
    ap.add_argument("--base", help="another cr-dump build, measured alongside (rows 'base ...')")
    ap.add_argument("--criu")
    ap.add_argument("--only", choices=["cr", "criu"])
    ap.add_argument("--work", help="directory for images (default: a new one under /var/tmp)")
    ap.add_argument("--json", action="store_true", help="also print every sample as JSON")
    ap.add_argument("--lazy", action="store_true", help="also the lazy restores (see above)")
    a = ap.parse_args()
    criu = None if a.only == "cr" else find_criu(a.criu)
    if criu is None and a.only != "cr":
        print("CRIU not found (--criu, $CRIU, ../shared/peers/criu, PATH): its rows are skipped")
    if os.geteuid() != 0:
        sys.exit("run as root (CRIU needs it; so does restoring credentials)")
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    work = tempfile.mkdtemp(prefix="cr-vs-criu-", dir=a.work or "/var/tmp")
    sumdir = os.path.join(work, "sums")
    os.mkdir(sumdir)
    prog = os.path.join(work, "bench_sum")
    subprocess.run(["cc", "-O2", "-o", prog, os.path.join(REPO, "tests/programs/bench_sum.c")],
                   check=True)
    env_crid = os.path.join(work, "crid")
    os.environ["CR_CRID_FILE"] = env_crid
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(a.busy)]
    s = {}  # name -> list of dict samples

    def add(name, **kv):
        s.setdefault(name, []).append(kv)

    dumps = []
    if a.only != "criu":
        dumps += [("cr lazy", []), ("cr direct", ["--direct"])]
        if a.base:
            dumps += [("base lazy", []), ("base direct", ["--direct"])]
    if criu:
        dumps.append(("criu dump", None))
    load = []
    try:
        for r in range(a.rounds):
            load.append(os.getloadavg()[0])
            rd = os.path.join(work, f"r{r}")
            os.mkdir(rd)
            t = subprocess.Popen([prog, str(a.mib), sumdir], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 cwd="/")
            want = wait_sum(sumdir, t.pid, 120)
            order = dumps[r % len(dumps):] + dumps[:r % len(dumps)]
            images = {}
            for name, extra in order:
                d = os.path.join(rd, name.replace(" ", "-"))
                os.mkdir(d)
                if extra is None:
                    cmd = [criu, "dump", "-t", str(t.pid), "-D", d, "--shell-job",
                           "--leave-running", "--display-stats", "-o", "dump.log"]
                else:
                    b = a.base if name.startswith("base") else a.bin
                    cmd = [b, "checkpoint", "--pid", str(t.pid), "-o", d, "--json"] + extra
                o, wall, cpu, tcpu = timed(cmd, t.pid)
                if o.returncode != 0:
                    raise SystemExit(f"{name} failed ({o.returncode}): {o.stderr}{o.stdout}")
                if extra is None:
                    m = re.search(r"Frozen time: (\d+) us", o.stdout + o.stderr)
                    down = int(m.group(1)) / 1000 if m else float("nan")
                    images[name] = d
                else:
                    j = json.loads(o.stdout)
                    down = j["downtime_ms"]
                    tcpu += (j.get("twin_cpu_ms") or 0) / 1000
                    images[name] = os.path.join(d, os.path.basename(j["image"]))
                add(name, wall=wall, cpu=cpu, task_cpu=tcpu, down_ms=down)
            t.kill()
            t.wait()
            rest = []
            if a.only != "criu":
                rest.append("cr restore")
                if a.base:
                    rest.append("base restore")
            if criu:
                rest.append("criu restore")
            if a.lazy and a.only != "criu":
                rest.append("cr lazy restore")
                if a.base:
                    rest.append("base lazy restore")
            if a.lazy and criu:
                rest.append("criu lazy restore")
            rest = rest[r % len(rest):] + rest[:r % len(rest)]
            for name in rest:
                if name.endswith("lazy restore"):
                    lazy_restore(name, a, criu, images, t.pid, sumdir, want, add)
                    continue
                if name == "cr restore":
                    cmd = [a.bin, "restore", "--detach", images["cr lazy"]]
                elif name == "base restore":
                    cmd = [a.base, "restore", "--detach", images["base lazy"]]
                else:
                    cmd = [criu, "restore", "-d", "-D", images["criu dump"], "--shell-job",
                           "-o", "restore.log"]
                o, wall, cpu, _ = timed(cmd)
                if o.returncode != 0:
                    raise SystemExit(f"{name} failed ({o.returncode}): {o.stderr}{o.stdout}")
                pid = t.pid if name == "criu restore" else int(o.stdout.split()[-1])
                check_restored(sumdir, pid, want, name)
                add(name, wall=wall, cpu=cpu)
            shutil.rmtree(rd)
            print(f"round {r + 1}/{a.rounds} done (load {load[-1]:.1f}); memory of every "
                  "restored task checked", file=sys.stderr)
    finally:
        for b in busy:
            b.kill()
            b.wait()
        shutil.rmtree(work, ignore_errors=True)
    report(s, a, load)


def report(s, a, load):
    med = lambda name, k: statistics.median(x[k] for x in s[name])
    gib = a.mib / 1024
    print(f"\n{a.mib} MiB target, {a.rounds} rounds interleaved, busy loops {a.busy}, "
          f"load avg at round starts {min(load):.1f}-{max(load):.1f} (median "
          f"{statistics.median(load):.1f})")
    print(f"{'':16} {'wall ms':>9} {'tool CPU s':>11} {'task CPU s':>11} {'CPU/GiB s':>10}"
          f" {'down ms':>9}")
    for name in s:
        w, c = med(name, "wall") * 1000, med(name, "cpu")
        if "down_ms" in s[name][0]:
            tc, dm = med(name, "task_cpu"), med(name, "down_ms")
            per = statistics.median((x["cpu"] + x["task_cpu"]) / gib for x in s[name])
            print(f"{name:16} {w:9.0f} {c:11.3f} {tc:11.3f} {per:10.3f} {dm:9.1f}")
        elif "filled" in s[name][0]:
            f = med(name, "filled") * 1000
            print(f"{name:16} {w:9.0f} ms to running, {f:.0f} ms to every page in")
        else:
            print(f"{name:16} {w:9.0f} {c:11.3f}")
    if "criu dump" in s and "cr lazy" in s:
        ratios(s, med)
    for who in ("cr", "base"):
        if f"{who} lazy restore" in s and f"{who} restore" in s:
            print(f"  lazy filled / eager restore, {who:4}  "
                  f"{med(who + ' lazy restore', 'filled') / med(who + ' restore', 'wall'):6.2f}"
                  "  (<= 1)")
    if "base lazy" in s:
        print("\nthis build / --base build:")
        for what in ("lazy", "direct", "restore", "lazy restore"):
            if "base " + what not in s:
                continue
            keys = {"restore": ("wall", "cpu"), "lazy restore": ("wall", "filled")}
            for k in keys.get(what, ("wall", "cpu", "down_ms")):
                print(f"  {what:12} {k:8} {med('cr ' + what, k) / med('base ' + what, k):6.2f}")
    if a.json:
        print(json.dumps(s))


def ratios(s, med):
    per = lambda n: statistics.median((x["cpu"] + x["task_cpu"]) for x in s[n])
    print("\nratios to CRIU (goal):")
    print(f"  CPU/GiB, lazy / criu dump          {per('cr lazy') / per('criu dump'):6.2f}  (<= 1)")
    print(f"  CPU/GiB, direct / criu dump        {per('cr direct') / per('criu dump'):6.2f}  (<= 1)")
    print(f"  checkpoint wall, lazy / criu dump  "
          f"{med('cr lazy', 'wall') / med('criu dump', 'wall'):6.2f}  (<= 0.8)")
    print(f"  checkpoint wall, direct / criu     "
          f"{med('cr direct', 'wall') / med('criu dump', 'wall'):6.2f}")
    print(f"  downtime lazy / criu frozen        "
          f"{med('cr lazy', 'down_ms') / med('criu dump', 'down_ms'):6.3f}  (<= 0.02)")
    if "cr restore" in s and "criu restore" in s:
        print(f"  restore wall, cr / criu            "
              f"{med('cr restore', 'wall') / med('criu restore', 'wall'):6.2f}  (<= 0.8)")
    if "cr lazy restore" in s and "criu lazy restore" in s:
        print(f"  lazy restore to running, cr / criu "
              f"{med('cr lazy restore', 'wall') / med('criu lazy restore', 'wall'):6.2f}")
        print(f"  lazy restore to filled, cr / criu  "
              f"{med('cr lazy restore', 'filled') / med('criu lazy restore', 'filled'):6.2f}")


if __name__ == "__main__":
    main()
