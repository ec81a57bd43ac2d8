#!/usr/bin/env bash
# A/B of two rustorch builds on the GPU machine, in one call: the same synthetic files, the
# engines alternating, ROUNDS rounds of `bench -p 512 -n 128 -r REPS` each, and one line per
# file and test with both medians (of the rounds' means) and the new/old ratio.
#   scripts/device-ab.sh OUT OLD_BIN NEW_BIN BACKEND SHAPE:TYPE...
# e.g. scripts/device-ab.sh /tmp/ab .cudabin/rustorch-old .cudabin/rustorch cuda \
#        tinyllama-1.1b:Q4_K_M tinyllama-1.1b:Q4_0 llama-7b:Q4_K_M
# Files are made by NEW_BIN's synth into MODELS (/tmp/rustorch-models). Writes OUT/ab.json.
set -uo pipefail
OUT=$1 OLD=$2 NEW=$3 BACKEND=$4
shift 4
ROUNDS=${ROUNDS:-3} REPS=${REPS:-5}
MODELS=${MODELS:-/tmp/rustorch-models}
mkdir -p "$OUT" "$MODELS"
RAW=$(mktemp -d)
for spec in "$@"; do
    f="$MODELS/${spec%%:*}-${spec##*:}.gguf"
    [[ -f $f ]] || "$NEW" synth --shape "${spec%%:*}" --type "${spec##*:}" -o "$f" >/dev/null || exit 1
done
for r in $(seq "$ROUNDS"); do
    for spec in "$@"; do
        f="$MODELS/${spec%%:*}-${spec##*:}.gguf"
        for side in old new; do
            bin=$OLD; [[ $side == new ]] && bin=$NEW
            "$bin" bench -m "$f" --backend "$BACKEND" -p 512 -n 128 -r "$REPS" --json \
                >"$RAW/$spec-$side-$r.json" 2>"$RAW/$spec-$side-$r.err" || cat "$RAW/$spec-$side-$r.err"
        done
    done
done
python3 - "$RAW" "$OUT" "$ROUNDS" "$@" <<'PY'
import json, os, statistics, sys
raw, out, rounds, specs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rows = []
for spec in specs:
    for test in ("pp512", "tg128"):
        med = {}
        for side in ("old", "new"):
            vals = []
            for r in range(1, rounds + 1):
                try:
                    for x in json.load(open(os.path.join(raw, f"{spec}-{side}-{r}.json"))):
                        t = f"pp{x['n_prompt']}" if x["n_prompt"] else f"tg{x['n_gen']}"
                        if t == test:
                            vals.append(x["avg_ts"])
                except Exception as e:
                    print(f"{spec} {side} round {r}: {e}")
            med[side] = (statistics.median(vals) if vals else None, vals)
        o, n = med["old"][0], med["new"][0]
        ratio = n / o if o and n else None
        rows.append({"file": spec, "test": test, "old": med["old"][1], "new": med["new"][1],
                     "old_median": o, "new_median": n, "ratio": ratio})
        print(f"{spec} {test}: old {o and round(o, 1)} new {n and round(n, 1)} ratio {ratio and round(ratio, 3)}"
              f"  (rounds old {[round(v, 1) for v in med['old'][1]]}, new {[round(v, 1) for v in med['new'][1]]})")
json.dump(rows, open(os.path.join(out, "ab.json"), "w"), indent=1)
PY
