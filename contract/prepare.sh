#!/usr/bin/env bash
# Prepares what `make contract` needs under an ignored folder (default .contract/):
#   <dest>/diffusion-pipe  diffusion-pipe at the pinned commit, with the ComfyUI and HunyuanVideo
#                          submodules in their paths
#   <dest>/venv            the trainer's own venv (contract/requirements.txt)
# Sources are git directories or clone URLs (DP_GIT, COMFY_GIT, HUNYUAN_GIT). Nothing here is
# committed: the folder is in .gitignore.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-.contract}
DP_GIT=${DP_GIT:-https://github.com/tdrussell/diffusion-pipe}
COMFY_GIT=${COMFY_GIT:-https://github.com/comfyanonymous/ComfyUI}
HUNYUAN_GIT=${HUNYUAN_GIT:-https://github.com/Tencent/HunyuanVideo}
DP_COMMIT=${DP_COMMIT:-8f83dbf25d03219df705570ec03e62be04bc402f}  # pinned in the Dockerfile
# The submodules train.py imports for every model (utils/patches.py), each at its gitlink;
# ComfyUI falls back to upstream 3cd7b32f (v0.8.0+2), which serves for Flux, when the source
# lacks the gitlink (its full history is large).
COMFY_COMMITS=${COMFY_COMMITS:-"9a9fdb10ed144ce760d9682cb247526ea23cc525 3cd7b32f"}
HUNYUAN_COMMITS=${HUNYUAN_COMMITS:-c4a9d7708dac7c930181c9e147d0092dffa36f92}
PYTHON=${PYTHON:-python3}

# Writes commit $2 of git directory $1 into folder $3. Unlike `git archive` it tolerates blobs a
# shallow snapshot lacks (diffusion-pipe's: four tokenizer files that Flux never reads).
export_tree() {
  local mode type sha path
  git --git-dir="$1" ls-tree -r "$2" | while read -r mode type sha path; do
    [[ "$type" == blob && "$mode" != 120000 ]] || continue
    mkdir -p "$3/$(dirname "$path")"
    if ! git --git-dir="$1" cat-file blob "$sha" >"$3/$path" 2>/dev/null; then
      rm -f "$3/$path"
      echo "not in the source, left out: $path" >&2
    fi
    [[ "$mode" != 100755 ]] || chmod +x "$3/$path"
  done
}

# A git directory to read from: the given one, or a bare clone of the URL.
git_dir() {
  if [[ -d "$1" ]]; then
    echo "$1"
  else
    git clone --quiet --bare "$1" "$dest/src/$2.git" >&2
    echo "$dest/src/$2.git"
  fi
}

# Writes the first of the commits $3 that git directory $2 has into folder $1.
export_first() {
  local c
  for c in $3; do
    if git --git-dir="$2" cat-file -e "$c^{commit}" 2>/dev/null; then
      mkdir -p "$1"
      export_tree "$2" "$c" "$1"
      echo "$c" >"$1/.contract-commit"
      return
    fi
  done
  echo "none of the commits $3 is in $2" >&2
  return 1
}

mkdir -p "$dest"
if [[ ! -f "$dest/diffusion-pipe/train.py" ]]; then
  part="$dest/diffusion-pipe.part"
  rm -rf "$part"
  export_first "$part" "$(git_dir "$DP_GIT" diffusion-pipe)" "$DP_COMMIT"
  export_first "$part/submodules/ComfyUI" "$(git_dir "$COMFY_GIT" ComfyUI)" "$COMFY_COMMITS"
  export_first "$part/submodules/HunyuanVideo" "$(git_dir "$HUNYUAN_GIT" HunyuanVideo)" \
    "$HUNYUAN_COMMITS"
  mv "$part" "$dest/diffusion-pipe"
fi

if [[ ! -f "$dest/venv/.installed" ]]; then
  start=$(date +%s)
  "$PYTHON" -m venv "$dest/venv"
  pip=("$dest/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  # deepspeed builds against the installed torch (no build isolation) and compiles no ops.
  "${pip[@]}" torch==2.13.0 setuptools wheel
  DS_BUILD_OPS=0 "${pip[@]}" --no-build-isolation deepspeed==0.18.4
  "${pip[@]}" -r "$here/requirements.txt"
  touch "$dest/venv/.installed"
  echo "contract venv installed in $(($(date +%s) - start)) s"
fi
echo "DIFFUSION_PIPE_DIR=$(cd "$dest/diffusion-pipe" && pwd)"
