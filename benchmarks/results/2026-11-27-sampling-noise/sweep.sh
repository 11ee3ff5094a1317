#!/bin/bash
# The sweep of 2026-11-27-sampling-noise.md: the demo's 8 held-out captions, 3 clips each, seed 7, one run per
# starting-noise correlation given as an argument. Run from the folder of a built mobius binary (it holds models/):
#   bash sweep.sh 0 0.3 0.5 0.7 0.9 0.95 0.99
# Writes rho-R.gif, rho-R.txt (captions), rho-R-frames.png and rho-R.log (the scores) into OUT (default: .).
out=${OUT:-.}
for r in "$@"; do
  ./mobius sample --checkpoint models/tiny-t2v.safetensors --seed 7 --count 3 --sample-frame-noise "$r" \
    --prompt "a green square moving right on a plain background" --prompt "a blue triangle moving right on a plain background" \
    --prompt "a yellow ball sliding to the right" --prompt "a red heart moving right on a plain background" \
    --prompt "a pink moon moving right on a plain background" --prompt "an orange star moving right" \
    --prompt "a purple diamond moving right on a plain background" --prompt "the brown smiley face is sliding to the right" \
    --out "$out/rho-$r.gif" > "$out/rho-$r.log" 2>&1
  echo "$r: $(grep '^mean' "$out/rho-$r.log")"
done
