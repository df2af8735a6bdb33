#!/usr/bin/env python3
"""Two cr-dump builds against each other: one 1 GiB target (tests/programs/fill.c), checkpoints
by the two binaries alternating (A-B, then B-A), N of each; prints the median wall and CPU
time (the command's user + system) of each and the ratios B / A.

    python3 cr-dump/benches/ab_checkpoint.py OLD/cr-dump NEW/cr-dump [--direct ...]

Env: N rounds (default 8), CR_BENCH_MIB (default 1024). Run as root or the target's owner.
"""
import glob, os, statistics, subprocess, sys, tempfile, time

if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
bins = {"A": sys.argv[1], "B": sys.argv[2]}
extra = sys.argv[3:]
rounds = int(os.environ.get("N", "8"))
mib = os.environ.get("CR_BENCH_MIB", "1024")
work = tempfile.mkdtemp(prefix="cr-ab-")
fill = os.path.join(work, "fill")
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/programs/fill.c")
subprocess.run(["gcc", "-O2", "-o", fill, src], check=True)
out = os.path.join(work, "out")
os.mkdir(out)
env = dict(os.environ, CR_CRID_FILE=os.path.join(work, "crid"))
target = subprocess.Popen([fill, mib], stdout=subprocess.PIPE, text=True)
try:
    while "ready" not in target.stdout.readline():
        pass
    wall = {k: [] for k in bins}
    cpu = {k: [] for k in bins}
    for r in range(rounds):
        for k in ("A", "B") if r % 2 == 0 else ("B", "A"):
            for f in glob.glob(os.path.join(out, "*")):
                os.remove(f)
            subprocess.run(["sync"])
            time.sleep(0.5)
            t0, c0 = time.time(), os.times()
            o = subprocess.run(
                [bins[k], "checkpoint", "--pid", str(target.pid), "-o", out, "--json"] + extra,
                capture_output=True, text=True, env=env)
            t1, c1 = time.time(), os.times()
            if o.returncode != 0:
                sys.exit(f"{bins[k]} failed: {o.stderr}")
            wall[k].append(t1 - t0)
            cpu[k].append(c1.children_user - c0.children_user
                          + c1.children_system - c0.children_system)
finally:
    target.kill()
    subprocess.run(["rm", "-rf", work])
med = lambda v: statistics.median(v)
for k in bins:
    print(f"{k} {bins[k]}: wall median {med(wall[k]):.3f} s (min {min(wall[k]):.3f}), "
          f"CPU median {med(cpu[k]):.3f} s")
print(f"B / A: wall median {med(wall['B']) / med(wall['A']):.3f}, "
      f"min {min(wall['B']) / min(wall['A']):.3f}, CPU median {med(cpu['B']) / med(cpu['A']):.3f}")
