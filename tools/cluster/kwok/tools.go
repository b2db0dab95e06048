//go:build tools

// kwok's command, imported so that go.mod/go.sum cover it for tools/cluster/build.sh.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
