#!/usr/bin/env bash
# Builds the real Pulumi engine for the engine tests (tests/engine): test tooling, never what users install.
#
#   tools/engine/build.sh            # prints the folder that holds bin/ and plugins/
#
# Everything comes from Go modules through the Go module proxy, at the versions requirements.in pins, into
# .lab/engine/ (git-ignored; LAB_ENGINE_DIR moves it):
#   bin/pulumi                       the pulumi CLI (pulumi/pkg/v3 cmd/pulumi), version stamped as the engine checks it
#   bin/pulumi-language-python       the lab's stand-in language host (tools/engine/langhost: why, there)
#   bin/pulumi-language-python-exec  the real exec shim, from the pulumi/sdk/v3 module
#   plugins/resource-kubernetes-v<pin>/pulumi-resource-kubernetes   the real kubernetes provider (see below)
#   plugins/resource-command-v<pin>/pulumi-resource-command         the lab's stand-in (tools/engine/command-provider)
# plugins/ has the layout of a PULUMI_HOME plugin folder, so the engine picks the providers by their version.
#
# Cached: a stamp of the inputs (this folder, the three pins of requirements.in, the Go version) skips a build whose inputs did not
# change, so a second run takes well under a second; Go's own caches make a rebuild after a change fast too.
# The stamp also records the sha256 of every file the build put in bin/ and plugins/. A file there that the stamp
# does not record with that hash (a plugin swapped in by hand, say the real pulumi-command to try it, or a folder
# built before binaries were recorded) is never used as the build's, nor overwritten or deleted by a rebuild: the
# script stops with a sentence naming the files, exit 1. Move them out (or delete the folder) to build again, or run
# with LAB_ENGINE_KEEP_CHANGED=1 to use the folder as it is, knowingly, without building. A recorded file that is
# missing is simply built again. A build goes into a scratch folder and replaces bin/ and plugins/ only once it
# succeeded, so a failed build leaves the last good one and its stamp in place.
# On failure: one sentence on stderr naming the step and the log file, exit 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tools/engine"
out="${LAB_ENGINE_DIR:-$root/.lab/engine}"
log="$out/build.log"
step="start"

fail() {
  echo "Building the Pulumi engine failed at step '$step' (details in $log): ${1:-see the log}." >&2
  exit 1
}
trap 'fail "$(tail -n 1 "$log" 2>/dev/null | tr -d "\r")"' ERR

if ! command -v go >/dev/null; then
  echo "Building the Pulumi engine needs Go 1.25 or newer on PATH (https://go.dev/dl/)." >&2
  exit 1
fi
mkdir -p "$out"
: >"$log"

pin() { # the version requirements.in pins for a Python package
  sed -n "s/^$1==\([0-9.]*\)\$/\1/p" "$root/requirements.in"
}
pulumi_version="$(pin pulumi)"
kubernetes_version="$(pin pulumi-kubernetes)"
command_version="$(pin pulumi-command)"
[[ -n "$pulumi_version" && -n "$kubernetes_version" && -n "$command_version" ]] ||
  fail "requirements.in does not pin pulumi, pulumi-kubernetes and pulumi-command with =="

# The CLI is the one piece built at exactly the pinned release: its wrapper module must require it.
step="check the CLI pin"
grep -q "github.com/pulumi/pulumi/pkg/v3 v$pulumi_version\b" "$here/cli/go.mod" ||
  fail "tools/engine/cli/go.mod does not require pulumi/pkg/v3 v$pulumi_version, the pulumi version requirements.in pins"

stamp="$(
  cd "$root"
  { go version; echo "$pulumi_version $kubernetes_version $command_version"; find tools/engine -type f ! -name '*.md' | LC_ALL=C sort | xargs sha256sum; } |
    sha256sum | cut -c1-16
)"

binaries() { # "<sha256>  <path>" of every file (or link) under bin/ and plugins/ of folder $1, sorted by path
  (cd "$1" && for folder in bin plugins; do if [[ -d "$folder" ]]; then find "$folder" ! -type d; fi; done | LC_ALL=C sort |
     while IFS= read -r file; do sha256sum "$file"; done)
}
step="check the binaries against the stamp"
recorded="$(tail -n +2 "$out/stamp" 2>/dev/null || true)"
present="$(binaries "$out")"
changed="$(comm -23 <(echo "$present" | LC_ALL=C sort) <(echo "$recorded" | LC_ALL=C sort) | sed 's/^[0-9a-f]*  //' |
  sed '/^$/d' | LC_ALL=C sort | paste -sd, - | sed 's/,/, /g')"
if [[ -n "$changed" ]]; then
  if [[ "${LAB_ENGINE_KEEP_CHANGED:-}" == "1" ]]; then
    echo "Using $out as it is (LAB_ENGINE_KEEP_CHANGED=1), with binaries its last build did not make: $changed." >&2
    echo "$out"
    exit 0
  fi
  echo "The engine folder $out holds binaries its last build did not make ($changed), such as a plugin swapped in" \
    "by hand: move them out of $out (or delete the folder) to build again, or set LAB_ENGINE_KEEP_CHANGED=1 to use" \
    "it as it is." >&2
  exit 1
fi
kubernetes_plugin="plugins/resource-kubernetes-v$kubernetes_version/pulumi-resource-kubernetes"
command_plugin="plugins/resource-command-v$command_version/pulumi-resource-command"
if [[ "$(head -n 1 "$out/stamp" 2>/dev/null)" == "$stamp" && "$present" == "$recorded" && -x "$out/bin/pulumi" \
      && -x "$out/$kubernetes_plugin" && -x "$out/$command_plugin" ]]; then
  echo "$out"
  exit 0
fi

# Built here, then moved into place once everything succeeded.
next="$out/next"
rm -rf "$next"
mkdir -p "$next/bin" "$next/plugins"

module_dir() { # where a module of the current wrapper's build list is unpacked; `go list -m` alone says nothing on a
  # cold module cache (.Dir stays empty until the module is downloaded), so download it first.
  go mod download "$1" && go list -m -f '{{.Dir}}' "$1"
}

# -mod=readonly: build exactly what the committed go.mod/go.sum say.
export GOFLAGS="-mod=readonly"

step="pulumi CLI v$pulumi_version"
(cd "$here/cli" && go build -o "$next/bin/pulumi" \
  -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$pulumi_version" \
  github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) >>"$log" 2>&1

step="Python language host (stand-in) and exec shim"
(cd "$here/langhost" && go build -o "$next/bin/pulumi-language-python" -ldflags "-X main.version=$pulumi_version" .
 sdk="$(module_dir github.com/pulumi/pulumi/sdk/v3)"
 install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$next/bin/pulumi-language-python-exec") >>"$log" 2>&1

step="command provider (stand-in) v$command_version"
(cd "$here/command-provider" && go build -o "$next/$command_plugin" -ldflags "-X main.version=$command_version" .) \
  >>"$log" 2>&1

# pulumi-kubernetes: the module proxy serves exactly one version of provider/v4, the pseudo-version of commit
# f47bc2d6f199, which is the v4.25.0 release (tools/engine/kubernetes/go.mod). 4.34.2 itself cannot be built here, so
# that nearest buildable release stands in, stamped with the pinned version so that the engine takes it as the
# plugin the Python SDK 4.34.2 asks for. Its main package embeds schema files that its `go generate` step writes,
# so the package is copied out of the module cache into a scratch copy of the wrapper module and generated there.
step="kubernetes provider (v4.25.0 code) as v$kubernetes_version"
src="$out/src/kubernetes"
rm -rf "$src"
mkdir -p "$src/cmd"
cp "$here/kubernetes/go.mod" "$here/kubernetes/go.sum" "$src/"
(cd "$src" && provider="$(module_dir github.com/pulumi/pulumi-kubernetes/provider/v4)" &&
 install -m 0644 "$provider"/cmd/pulumi-resource-kubernetes/{main.go,generate.go,schema.json,terraform-mapping.json} cmd/ &&
 (cd cmd && VERSION="$kubernetes_version" go run generate.go) &&
 go build -o "$next/$kubernetes_plugin" \
   -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$kubernetes_version" ./cmd) \
  >>"$log" 2>&1

step="install the new build"
{ echo "$stamp"; binaries "$next"; } >"$next/stamp"
# Everything in bin/ and plugins/ was checked above to be the last build's own: nobody's work is deleted here.
rm -rf "$out/bin" "$out/plugins"
mv "$next/bin" "$next/plugins" "$out/"
mv "$next/stamp" "$out/stamp"
rmdir "$next"
echo "$out"
