#!/usr/bin/env python3
"""Scale: cr-dump against CRIU 4.2 from 64 MiB to 8 GiB of present memory (issue 14, "Scale").

For each size (--sizes, MiB), each round, the two parts in an order that rotates from round to
round:
  cr-dump: a fresh target (tests/programs/bench_sum.c: every page non-zero, a checksum of its
    whole memory written to a file), `cr-dump checkpoint --direct` (image deleted at once),
    then `cr-dump checkpoint` (lazy, the default), the target killed, `cr-dump restore
    --detach` of the lazy image, the restored task's checksum checked, the image deleted;
  CRIU: a fresh target, `criu dump --leave-running --shell-job --display-stats`, the target
    killed, `criu restore -d --shell-job`, the restored task's checksum checked, the images
    deleted.
So at most one image is on disk at a time. Measured per command: wall time, CPU of the tool and
its threads and children (wait4's rusage), the CPU the target spends meanwhile
(/proc/PID/stat), downtime (`--json` downtime_ms; CRIU's "Frozen time"), and the tool's peak
memory, sampled every 20 ms from /proc/PID/status: VmHWM (the peak resident set, file pages
included; the last sample before the exit), and the peaks of RssAnon (its own memory) and of
RssFile (mapped file pages, e.g. an image it maps: page cache, reclaimable). (getrusage's
ru_maxrss is not used: it counts the Python process the command was forked from, 17 MiB, as
long as the command is smaller.)

Printed: per size the medians, the time per GiB and its ratio to the 1 GiB row (linearity: 1.0
is linear; a per-GiB figure that grows with the size is worse than linear), the ratios to CRIU,
and the peak memory per size.

    sudo python3 cr-dump/benches/scale.py [--sizes 64,256,1024,4096,8192] [--rounds 1]
         [--bin target/release/cr-dump] [--criu PATH] [--only cr] [--work DIR] [--cold] [--thp]
         [--json]

--cold drops each image's pages from the page cache (posix_fadvise DONTNEED, those files only)
before its restore: both tools then read their image from the disk.

--thp runs the targets with transparent huge pages (an LD_PRELOAD shim built here makes the
target's large anonymous mmap MADV_HUGEPAGE; the machine's THP setting is left alone): the same
target for both tools, a separate row, not the default.

Before each size the bench checks MemAvailable (at least the size + 4 GiB: the target, and the
restored copy after it is killed) and free disk where the images go (at least 10 GB left after
an image of the size, and 22 GB for 8 GiB and more) and skips the size with the reason when
either is short. CRIU is found as vs_criu.py finds it; its rows are skipped (and said so) when
it is absent. Root is needed.
"""
import argparse, ctypes, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "../.."))

# The helpers of the side-by-side benchmark (finding CRIU, the CPU of a task, waiting for a
# target's checksum, reaping and checking a restored task).
sys.path.insert(0, HERE)
from vs_criu import check_restored, find_criu, task_cpu, wait_sum  # noqa: E402

GIB = 1 << 30

# LD_PRELOAD shim for --thp: large anonymous private mappings get MADV_HUGEPAGE (the machine's
# THP setting is "madvise" here; bench_sum.c itself asks for nothing).
THP_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/mman.h>
void *mmap(void *a, size_t len, int prot, int flags, int fd, off_t off) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real)
        real = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    void *p = real(a, len, prot, flags, fd, off);
    if (p != MAP_FAILED && (flags & MAP_ANONYMOUS) && len >= (2u << 20))
        madvise(p, len, MADV_HUGEPAGE);
    return p;
}
"""


def meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def status_kib(pid, fields):
    """The given /proc/PID/status fields in KiB (empty when the task is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k = line.split(":", 1)[0]
                if k in fields:
                    out[k] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def run(cmd, pid=None):
    """Runs cmd; returns (returncode, stdout, stderr, dict of measures).

    Measures: wall s, cpu s (the command, its threads and reaped children: wait4's rusage),
    task_cpu s (the target pid's CPU meanwhile), hwm/anon/file MiB (peaks of VmHWM/RssAnon/
    RssFile sampled every 20 ms)."""
    subprocess.run(["sync"])
    time.sleep(0.3)
    k0 = task_cpu(pid) if pid else 0.0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
        while True:
            got, status, ru = os.wait4(p.pid, os.WNOHANG)
            if got == p.pid:
                break
            for k, v in status_kib(p.pid, tuple(peak)).items():
                peak[k] = max(peak[k], v)
            time.sleep(0.02)
        t1 = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read(), err.read()
    k1 = task_cpu(pid) if pid else 0.0
    m = dict(wall=t1 - t0, cpu=ru.ru_utime + ru.ru_stime, task_cpu=max(0.0, k1 - k0),
             hwm=peak["VmHWM"] / 1024, anon=peak["RssAnon"] / 1024, file=peak["RssFile"] / 1024)
    return p.returncode, text, etext, m


def start_target(prog, mib, sumdir, env):
    t = subprocess.Popen([prog, str(mib), sumdir], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=env)
    return t, wait_sum(sumdir, t.pid, 60 + mib / 16)


def stop(t):
    t.kill()
    t.wait()


def must(rc, text, etext, what):
    if rc != 0:
        raise SystemExit(f"{what} failed ({rc}): {etext}{text}")


def cr_round(a, prog, mib, sumdir, env, rd, add):
    """cr-dump's part of a round: --direct and lazy checkpoints, the lazy image restored."""
    t, want = start_target(prog, mib, sumdir, env)
    try:
        images = {}
        # --direct first (its image deleted at once), then the lazy checkpoint whose image is
        # restored: written last, it is in the page cache as CRIU's image is at its restore (at
        # 8 GiB, writing the --direct image after it pushed part of it out of the cache, and the
        # restore then read it from the disk).
        for name, extra in [("cr direct", ["--direct"]), ("cr lazy", [])]:
            d = os.path.join(rd, name.replace(" ", "-"))
            os.mkdir(d)
            rc, text, etext, m = run([a.bin, "checkpoint", "--pid", str(t.pid), "-o", d, "--json"]
                              + extra, t.pid)
            must(rc, text, etext, name)
            j = json.loads(text)
            m.update(down_ms=j["downtime_ms"], capture_ms=j.get("capture_ms", 0),
                     writeback_ms=j.get("writeback_ms", 0))
            # The twin's calls are the checkpoint's work too (vs_criu.py).
            m["task_cpu"] += (j.get("twin_cpu_ms") or 0) / 1000
            add(name, m)
            if name == "cr lazy":
                images[name] = os.path.join(d, os.path.basename(j["image"]))
            else:
                shutil.rmtree(d)  # one image on disk at a time
    finally:
        stop(t)
    if a.cold:
        evict(images["cr lazy"])
    rc, text, etext, m = run([a.bin, "restore", "--detach", images["cr lazy"]])
    must(rc, text, etext, "cr restore")
    check_restored(sumdir, int(text.split()[-1]), want, "cr restore")
    add("cr restore", m)
    shutil.rmtree(os.path.dirname(images["cr lazy"]))


def criu_round(a, criu, prog, mib, sumdir, env, rd, add):
    """CRIU's part of a round: dump --leave-running, restore -d."""
    t, want = start_target(prog, mib, sumdir, env)
    d = os.path.join(rd, "criu")
    os.mkdir(d)
    try:
        rc, text, etext, m = run([criu, "dump", "-t", str(t.pid), "-D", d, "--shell-job",
                           "--leave-running", "--display-stats", "-o", "dump.log"], t.pid)
        must(rc, text, etext, "criu dump")
        f = re.search(r"Frozen time: (\d+) us", text + etext)
        m["down_ms"] = int(f.group(1)) / 1000 if f else float("nan")
        add("criu dump", m)
    finally:
        stop(t)
    if a.cold:
        evict(d)
    rc, text, etext, m = run([criu, "restore", "-d", "-D", d, "--shell-job", "-o",
                              "restore.log"])
    must(rc, text, etext, "criu restore")
    check_restored(sumdir, t.pid, want, "criu restore")
    add("criu restore", m)
    shutil.rmtree(d)


def evict(path):
    """Drops the page cache of an image file (or of every file of a directory) after writing it
    out: a restore from a cold image, as on another machine or after a while. Only these files'
    pages: the rest of the machine's cache is left alone."""
    subprocess.run(["sync"])
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def room(mib, work):
    """None when a size fits in memory and on disk now; else the reason it does not."""
    size = mib << 20
    avail = meminfo("MemAvailable")
    if avail < size + 4 * GIB:
        return (f"MemAvailable {avail / GIB:.1f} GiB < {mib} MiB + 4 GiB (the target, then its "
                "restored copy)")
    free = shutil.disk_usage(work).free
    need = max(size * 1.1 + 10e9, 22e9 if mib >= 8192 else 0)
    if free < need:
        return (f"{free / 1e9:.1f} GB free on {work}, {need / 1e9:.1f} GB needed (an image of "
                f"{mib} MiB and 10 GB left; 22 GB for 8 GiB)")
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="64,256,1024,4096,8192", help="MiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/cr-dump"))
    ap.add_argument("--criu")
    ap.add_argument("--only", choices=["cr"])
    ap.add_argument("--work", help="directory for images (default: a new one under /var/tmp)")
    ap.add_argument("--thp", action="store_true", help="targets with THP (see above)")
    ap.add_argument("--cold", action="store_true",
                    help="restore from images out of the page cache (see above)")
    ap.add_argument("--json", action="store_true", help="also print every sample as JSON")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x]
    criu = None if a.only == "cr" else find_criu(a.criu)
    if criu is None and a.only != "cr":
        print("CRIU not found (--criu, $CRIU, ../shared/peers/criu, PATH): its rows are skipped")
    if os.geteuid() != 0:
        sys.exit("run as root (CRIU needs it; so does restoring credentials)")
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    work = tempfile.mkdtemp(prefix="cr-scale-", dir=a.work or "/var/tmp")
    sumdir = os.path.join(work, "sums")
    os.mkdir(sumdir)
    prog = os.path.join(work, "bench_sum")
    subprocess.run(["cc", "-O2", "-o", prog, os.path.join(REPO, "tests/programs/bench_sum.c")],
                   check=True)
    env = dict(os.environ)
    if a.thp:
        shim = os.path.join(work, "thp.so")
        src = os.path.join(work, "thp.c")
        with open(src, "w") as f:
            f.write(THP_SHIM)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", shim, src, "-ldl"], check=True)
        env["LD_PRELOAD"] = shim
    os.environ["CR_CRID_FILE"] = os.path.join(work, "crid")
    s, load, skipped = {}, {}, {}  # s: (mib, name) -> list of samples
    try:
        for mib in sizes:
            why = room(mib, work)
            if why:
                skipped[mib] = why
                print(f"{mib} MiB skipped: {why}", file=sys.stderr)
                continue
            for r in range(a.rounds):
                load.setdefault(mib, []).append(os.getloadavg()[0])
                rd = os.path.join(work, f"{mib}-{r}")
                os.mkdir(rd)
                add = lambda name, m, mib=mib: s.setdefault((mib, name), []).append(m)
                parts = [lambda: cr_round(a, prog, mib, sumdir, env, rd, add)]
                if criu:
                    parts.append(lambda: criu_round(a, criu, prog, mib, sumdir, env, rd, add))
                for part in parts[r % len(parts):] + parts[:r % len(parts)]:
                    part()
                shutil.rmtree(rd)
                print(f"{mib} MiB round {r + 1}/{a.rounds} done (load {load[mib][-1]:.1f}); "
                      "every restored task checked", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(s, a, sizes, load, skipped)


def report(s, a, sizes, load, skipped):
    med = lambda mib, name, k: statistics.median(x[k] for x in s[(mib, name)])
    have = lambda mib, name: (mib, name) in s
    done = [m for m in sizes if m not in skipped]
    print(f"\nscale: {a.rounds} round(s) per size, THP {'on (madvise shim)' if a.thp else 'off'}"
          f", images {'cold (evicted before restore)' if a.cold else 'in the page cache'}")
    for mib, why in skipped.items():
        print(f"  {mib} MiB skipped: {why}")
    for mib in done:
        print(f"  {mib} MiB: load avg at round starts {min(load[mib]):.1f}-{max(load[mib]):.1f}")
    names = ["cr lazy", "cr direct", "criu dump", "cr restore", "criu restore"]
    print(f"\n{'MiB':>6} {'':13} {'wall ms':>9} {'ms/GiB':>8} {'/1GiB':>6} {'CPU s':>7} "
          f"{'CPU/GiB':>8} {'/1GiB':>6} {'down ms':>8} {'VmHWM':>7} {'anon':>6} {'file':>6}")
    ref = 1024 if 1024 in done else (done[0] if done else None)
    for mib in done:
        gib = mib / 1024
        for name in names:
            if not have(mib, name):
                continue
            w = med(mib, name, "wall")
            cpu = statistics.median(x["cpu"] + x.get("task_cpu", 0) for x in s[(mib, name)])
            wr = w / gib / (med(ref, name, "wall") / (ref / 1024))
            cref = statistics.median(x["cpu"] + x.get("task_cpu", 0) for x in s[(ref, name)])
            cr_ = (cpu / gib) / (cref / (ref / 1024)) if cref else float("nan")
            down = f"{med(mib, name, 'down_ms'):8.1f}" if "down_ms" in s[(mib, name)][0] else \
                f"{'':8}"
            print(f"{mib:6} {name:13} {w * 1000:9.0f} {w * 1000 / gib:8.0f} {wr:6.2f} "
                  f"{cpu:7.2f} {cpu / gib:8.3f} {cr_:6.2f} {down} "
                  f"{med(mib, name, 'hwm'):7.0f} {med(mib, name, 'anon'):6.1f} "
                  f"{med(mib, name, 'file'):6.0f}")
    print(f"(ms/GiB, CPU/GiB: per GiB of the target; /1GiB: that per-GiB figure over the "
          f"{ref} MiB row's; CPU = tool + target; VmHWM/anon/file: the tool's peak RSS, "
          "RssAnon, RssFile in MiB)")
    if not any(have(m, "criu dump") for m in done):
        return
    print(f"\n{'MiB':>6} {'lazy wall':>10} {'direct':>7} {'CPU lazy':>9} {'CPU dir':>8} "
          f"{'down/frozen':>12} {'restore':>8}   (cr-dump / CRIU; goals <=0.8, <=1, <=0.02, <=0.8)")
    tot = lambda mib, n: statistics.median(x["cpu"] + x["task_cpu"] for x in s[(mib, n)])
    for mib in done:
        if not (have(mib, "criu dump") and have(mib, "cr lazy")):
            continue
        c = lambda n, k: med(mib, n, k)
        rest = (c("cr restore", "wall") / c("criu restore", "wall")
                if have(mib, "criu restore") else float("nan"))
        print(f"{mib:6} {c('cr lazy', 'wall') / c('criu dump', 'wall'):10.2f} "
              f"{c('cr direct', 'wall') / c('criu dump', 'wall'):7.2f} "
              f"{tot(mib, 'cr lazy') / tot(mib, 'criu dump'):9.2f} "
              f"{tot(mib, 'cr direct') / tot(mib, 'criu dump'):8.2f} "
              f"{c('cr lazy', 'down_ms') / c('criu dump', 'down_ms'):12.3f} {rest:8.2f}")
    if a.json:
        print(json.dumps({f"{k[0]} {k[1]}": v for k, v in s.items()}))


if __name__ == "__main__":
    main()
