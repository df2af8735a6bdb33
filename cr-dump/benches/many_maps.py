#!/usr/bin/env python3
"""Checkpoint and restore of a task with many mappings: cr-dump against CRIU 4.2, side by side,
rounds interleaved (issue 14, "Scale").

Each round starts a fresh target (tests/programs/many_maps.c: N one-page anonymous mappings,
every other one read-only so that none merge, every page non-zero; it writes "CHECKSUM
MAPPINGS" to a file), then, in an order that rotates from round to round:
  cr-dump checkpoint (lazy, the default) [and the --base build's],
  criu dump --leave-running --shell-job --display-stats;
kills the target, then restores each image (`cr-dump restore --detach`, `criu restore -d
--shell-job`); every restored task is asked (SIGUSR1) for its checksum and its number of
mappings, which must both be the original's. Measured per command: wall time, CPU of the tool
and its children, the CPU the target spends meanwhile, downtime (`--json` downtime_ms; CRIU's
"Frozen time").

    sudo python3 cr-dump/benches/many_maps.py [--rounds 5] [--maps 65000]
         [--bin target/release/cr-dump] [--base OTHER/cr-dump] [--criu PATH] [--only cr]
         [--no-restore] [--busy N]

CRIU is taken from --criu, $CRIU, ../shared/peers/criu or `criu` on PATH; when it is absent
its rows are skipped and said so. Root is needed. vm.max_map_count (65530 by default) bounds
--maps: the target's own mappings come on top.
"""
import argparse, ctypes, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "../.."))


# The helpers the side-by-side benchmark has (finding CRIU, timing a command, the CPU of a
# task, waiting for a target's checksum, reaping a restored task).
sys.path.insert(0, HERE)
from vs_criu import find_criu, reap, task_cpu, timed  # noqa: E402
from vs_criu import wait_sum as _wait_sum  # noqa: E402


def wait_sum(sumdir, pid, timeout=120.0):
    """A target with 65,000 mappings takes longer to sum than vs_criu's."""
    return _wait_sum(sumdir, pid, timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--maps", type=int, default=65000)
    ap.add_argument("--busy", type=int, default=0, help="busy loops competing for the cores")
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/cr-dump"))
    ap.add_argument("--base", help="another cr-dump build, measured alongside (rows 'base ...')")
    ap.add_argument("--criu")
    ap.add_argument("--only", choices=["cr"])
    ap.add_argument("--no-restore", action="store_true", help="checkpoints only")
    ap.add_argument("--extra", default="", help="more cr-dump checkpoint arguments (both builds)")
    ap.add_argument("--work", help="directory for images (default: a new one under /var/tmp)")
    a = ap.parse_args()
    criu = None if a.only == "cr" else find_criu(a.criu)
    if criu is None and a.only != "cr":
        print("CRIU not found (--criu, $CRIU, ../shared/peers/criu, PATH): its rows are skipped")
    if os.geteuid() != 0:
        sys.exit("run as root (CRIU needs it; so does restoring credentials)")
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    work = tempfile.mkdtemp(prefix="cr-many-maps-", dir=a.work or "/var/tmp")
    sumdir = os.path.join(work, "sums")
    os.mkdir(sumdir)
    prog = os.path.join(work, "many_maps")
    subprocess.run(["cc", "-O2", "-o", prog, os.path.join(REPO, "tests/programs/many_maps.c")],
                   check=True)
    os.environ["CR_CRID_FILE"] = os.path.join(work, "crid")
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(a.busy)]
    s, load = {}, []
    dumps = [("cr", a.bin)] + ([("base", a.base)] if a.base else [])
    dumps += [("criu", None)] if criu else []
    extra = a.extra.split()
    try:
        for r in range(a.rounds):
            load.append(os.getloadavg()[0])
            rd = os.path.join(work, f"r{r}")
            os.mkdir(rd)
            t = subprocess.Popen([prog, str(a.maps), sumdir], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
            want = wait_sum(sumdir, t.pid)
            images = {}
            for name, b in dumps[r % len(dumps):] + dumps[:r % len(dumps)]:
                d = os.path.join(rd, name)
                os.mkdir(d)
                if b is None:
                    cmd = [criu, "dump", "-t", str(t.pid), "-D", d, "--shell-job",
                           "--leave-running", "--display-stats", "-o", "dump.log"]
                else:
                    cmd = [b, "checkpoint", "--pid", str(t.pid), "-o", d, "--json"] + extra
                o, wall, cpu, tcpu = timed(cmd, t.pid)
                if o.returncode != 0:
                    raise SystemExit(f"{name} dump failed ({o.returncode}): {o.stderr}{o.stdout}")
                if b is None:
                    m = re.search(r"Frozen time: (\d+) us", o.stdout + o.stderr)
                    down = int(m.group(1)) / 1000 if m else float("nan")
                    images[name] = d
                else:
                    j = json.loads(o.stdout)
                    down = j["downtime_ms"]
                    tcpu += (j.get("twin_cpu_ms") or 0) / 1000  # the twin's calls (vs_criu.py)
                    images[name] = os.path.join(d, os.path.basename(j["image"]))
                s.setdefault(name + " dump", []).append(
                    dict(wall=wall, cpu=cpu, task_cpu=tcpu, down_ms=down))
            t.kill()
            t.wait()
            if not a.no_restore:
                names = [n for n, _ in dumps]
                for name in names[r % len(names):] + names[:r % len(names)]:
                    if name == "criu":
                        cmd = [criu, "restore", "-d", "-D", images[name], "--shell-job",
                               "-o", "restore.log"]
                    else:
                        cmd = [dict(dumps)[name], "restore", "--detach", images[name]]
                    o, wall, cpu, _ = timed(cmd)
                    if o.returncode != 0:
                        raise SystemExit(f"{name} restore failed ({o.returncode}): "
                                         f"{o.stderr}{o.stdout}")
                    pid = t.pid if name == "criu" else int(o.stdout.split()[-1])
                    os.kill(pid, signal.SIGUSR1)
                    got = wait_sum(sumdir, pid)
                    reap(pid)
                    if got != want:
                        raise SystemExit(f"{name} restore: checksum and mappings {got}, "
                                         f"original {want}")
                    s.setdefault(name + " restore", []).append(dict(wall=wall, cpu=cpu))
            shutil.rmtree(rd)
            print(f"round {r + 1}/{a.rounds} done (load {load[-1]:.1f})"
                  + ("" if a.no_restore else "; every restored task checked"), file=sys.stderr)
    finally:
        for b in busy:
            b.kill()
            b.wait()
        shutil.rmtree(work, ignore_errors=True)
    report(s, a, load)


def report(s, a, load):
    med = lambda name, k: statistics.median(x[k] for x in s[name])
    print(f"\n{a.maps} one-page mappings, {a.rounds} rounds interleaved, busy loops {a.busy}, "
          f"load avg at round starts {min(load):.1f}-{max(load):.1f}")
    print(f"{'':14} {'wall ms':>9} {'tool CPU s':>11} {'task CPU s':>11} {'down ms':>9}")
    for name in s:
        w, c = med(name, "wall") * 1000, med(name, "cpu")
        if "down_ms" in s[name][0]:
            print(f"{name:14} {w:9.0f} {c:11.3f} {med(name, 'task_cpu'):11.3f} "
                  f"{med(name, 'down_ms'):9.1f}")
        else:
            print(f"{name:14} {w:9.0f} {c:11.3f}")
    for other in ("criu", "base"):
        if other + " dump" not in s:
            continue
        print(f"\ncr-dump / {other}:")
        print(f"  checkpoint wall    {med('cr dump', 'wall') / med(other + ' dump', 'wall'):6.3f}")
        print(f"  stop / frozen      "
              f"{med('cr dump', 'down_ms') / med(other + ' dump', 'down_ms'):6.3f}")
        if "cr restore" in s and other + " restore" in s:
            print(f"  restore wall       "
                  f"{med('cr restore', 'wall') / med(other + ' restore', 'wall'):6.3f}")


if __name__ == "__main__":
    main()
