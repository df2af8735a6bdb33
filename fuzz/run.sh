#!/usr/bin/env bash
# Runs every cargo-fuzz target of cr-format and cr-dump for a bounded time, one after the other
# on one core, seeding each corpus from spec/vectors. Exits non-zero if any target crashed, and
# prints the crash file and how to reproduce it.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    default: 30 s, every target
#   bash fuzz/run.sh 30                                  CI
#   bash fuzz/run.sh 3600                                long campaign (FUZZING.md)
#
# Corpora persist in fuzz/corpus/<target>/ (git-ignored), logs in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(parse stream_vs_slice roundtrip chain inspect encode)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Seeds: every vector, valid and invalid. stream_vs_slice reads chunk sizes from its first
# bytes (see cr_fuzz::format): its seeds are each vector behind a few chunk-size prefixes.
# encode takes JSON: its seeds are each valid vector's `show --json` (the golden files) and
# `show --json --with-pages`, made here from the golden file and the image's page data (compact,
# so that all but the 16 KiB-page vector fit in its max_len).
vectors=(../spec/vectors/valid/*.bin ../spec/vectors/invalid/*.bin)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    if [ "$t" = encode ]; then
        for j in ../spec/vectors/valid/*.show.json; do
            name=$(basename "$j" .show.json)
            cp "$j" "corpus/$t/seed-$name-metadata.json"
            python3 - "$j" "../spec/vectors/valid/$name.bin" >"corpus/$t/seed-$name-pages.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
img = open(sys.argv[2], "rb").read()
for b in doc["body"]:
    p = b.get("pages")
    if p is not None:
        off = int(p["data_offset"], 16)
        p["data"] = img[off : off + p["data_len"]].hex()
    v = b.get("vdso_data")
    if v is not None:
        # The vDSO's bytes: the payload of the VdsoData record (kind 17) after its 8 bytes.
        at = 0
        while at + 16 <= len(img):
            kind = int.from_bytes(img[at : at + 2], "little")
            n = int.from_bytes(img[at + 4 : at + 8], "little")
            if kind == 17:
                v["data"] = img[at + 24 : at + 24 + v["len"]].hex()
                break
            at += 16 + n
sys.stdout.write(json.dumps(doc, separators=(",", ":")))
PY
            if [ "$(wc -c <"corpus/$t/seed-$name-pages.json")" -gt 65536 ]; then
                rm "corpus/$t/seed-$name-pages.json"
            fi
        done
        continue
    fi
    for v in "${vectors[@]}"; do
        name=$(basename "$(dirname "$v")")-$(basename "$v" .bin)
        if [ "$t" = stream_vs_slice ]; then
            # 1-byte chunks; 7 then 133 KiB; 64, 2 KiB, 1 byte, 4 KiB.
            { printf '\x00\x00'; cat "$v"; } >"corpus/$t/seed-$name-c1"
            { printf '\x01\x06\xff'; cat "$v"; } >"corpus/$t/seed-$name-c7"
            { printf '\x03\x3f\x81\x00\x83'; cat "$v"; } >"corpus/$t/seed-$name-cmix"
        else
            cp "$v" "corpus/$t/seed-$name"
        fi
    done
done

# cr-format is #![forbid(unsafe_code)]: AddressSanitizer would only watch its dependencies and
# costs 3x in executions. Overflow checks and debug assertions are on either way.
# FUZZ_SANITIZER=address bash fuzz/run.sh ... for an ASan run.
sanitizer=${FUZZ_SANITIZER:-none}
echo "== building fuzz targets (nightly, sanitizer: $sanitizer)"
cargo +nightly fuzz build -s "$sanitizer"

mkdir -p logs
failed=()
summary=()
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    rm -f fuzz-0.log
    set +e
    # -jobs=1 -workers=1: one process on one core; libFuzzer writes the job's log to fuzz-0.log.
    # roundtrip and chain build images from arbitrary bytes: 8 KiB of input is plenty (the
    # vectors seeding them are longer than that); parse, stream_vs_slice and inspect take
    # images; encode takes JSON, whose page data is hex (64 KiB: images up to about 28 KiB),
    # with a dictionary of its tokens.
    case $t in
        roundtrip | chain) opts=(-max_len=8192) ;;
        encode) opts=(-max_len=65536 -dict=encode.dict) ;;
        *) opts=() ;;
    esac
    cargo +nightly fuzz run -s "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 \
        -timeout=30 -rss_limit_mb=2048 "${opts[@]}" >"logs/$t.run.log" 2>&1
    rc=$?
    set -e
    log="logs/$t.log"
    if [ -f fuzz-0.log ]; then mv fuzz-0.log "$log"; else cp "logs/$t.run.log" "$log"; fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 || true)
    summary+=("$(printf '%-16s execs %-10s exec/s %-7s %s' "$t" "${execs:-?}" "${rate:-?}" "$cov")")
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $rc); end of its log:"
        grep -v '^#[0-9]' "$log" | tail -60
        crash=$(ls -t "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* 2>/dev/null | head -1 || true)
        if [ -n "$crash" ]; then
            echo "!! crash file: fuzz/$crash ($(wc -c <"$crash") bytes)"
            od -A x -t x1z "$crash" | head -20 || true  # head closes the pipe early (pipefail)
            echo "!! reproduce: (cd fuzz && cargo +nightly fuzz run -s $sanitizer $t $crash)"
            echo "!! minimize:  (cd fuzz && cargo +nightly fuzz tmin -s $sanitizer $t $crash)"
        fi
    fi
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
