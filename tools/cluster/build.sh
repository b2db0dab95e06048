#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the cluster tests (tests/cluster): test tooling, never what users install.
#
#   tools/cluster/build.sh           # prints the folder that holds bin/
#
# Everything comes from Go modules through the Go module proxy, at the versions the wrapper modules beside this script
# pin, into .lab/cluster/ (git-ignored; LAB_CLUSTER_DIR moves it):
#   bin/etcd                         etcd's own main (etcd/: go.etcd.io/etcd/server/v3 etcdmain)
#   bin/kube-apiserver, bin/kube-controller-manager, bin/kube-scheduler
#                                    k8s.io/kubernetes' commands (kubernetes/: its ./staging modules come from the
#                                    proxy at the matching v0.x release), version stamped as a release build is, so
#                                    that Helm's kubeVersion checks and the API server's compatibility version see
#                                    the real minor
#   bin/kubectl                      the kubectl of the same release: the lab drives the cluster with it
#   bin/kwok                         sigs.k8s.io/kwok cmd/kwok (kwok/): it plays the kubelets
#
# Cached: a stamp of the inputs (this folder, the Go version) skips a build whose inputs did not change, so a second run
# takes well under a second; Go's own caches make a rebuild after a change fast too.
# On failure: one sentence on stderr naming the step and the log file, exit 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tools/cluster"
out="${LAB_CLUSTER_DIR:-$root/.lab/cluster}"
log="$out/build.log"
step="start"

fail() {
  echo "Building the Kubernetes control plane failed at step '$step' (details in $log): ${1:-see the log}." >&2
  exit 1
}
trap 'fail "$(tail -n 1 "$log" 2>/dev/null | tr -d "\r")"' ERR

if ! command -v go >/dev/null; then
  echo "Building the Kubernetes control plane needs Go 1.26 or newer on PATH (https://go.dev/dl/)." >&2
  exit 1
fi
mkdir -p "$out"
: >"$log"

stamp="$(
  cd "$root"
  { go version; find tools/cluster -type f ! -name '*.md' | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16
)"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
complete=yes
for b in "${binaries[@]}"; do [[ -x "$out/bin/$b" ]] || complete=no; done
if [[ "$(cat "$out/stamp" 2>/dev/null)" == "$stamp" && "$complete" == yes ]]; then
  echo "$out"
  exit 0
fi
rm -f "$out/stamp"

# -mod=readonly: build exactly what the committed go.mod/go.sum say. Static binaries, as Kubernetes releases them.
export GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

required() { # the version a wrapper module's go.mod requires of a module
  sed -n "s#^\(require \)\?[[:space:]]*$2 \(v[^ ]*\).*#\2#p" "$here/$1/go.mod" | head -n 1
}

step="etcd"
(cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/bin/etcd" .) >>"$log" 2>&1

kubernetes_version="$(required kubernetes k8s.io/kubernetes)"
[[ "$kubernetes_version" =~ ^v1\.([0-9]+)\. ]] || fail "tools/cluster/kubernetes/go.mod does not require a k8s.io/kubernetes v1.x release"
minor="${BASH_REMATCH[1]}"
step="kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $kubernetes_version"
flags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  flags+=" -X $pkg.gitVersion=$kubernetes_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
(cd "$here/kubernetes" && go build -ldflags "$flags" -o "$out/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) >>"$log" 2>&1

step="kwok $(required kwok sigs.k8s.io/kwok)"
(cd "$here/kwok" && go build -ldflags "-s -w" -o "$out/bin/kwok" sigs.k8s.io/kwok/cmd/kwok) >>"$log" 2>&1

echo "$stamp" >"$out/stamp"
echo "$out"
