// The etcd server for the cluster tier (tools/cluster/build.sh): etcd's own main, nothing added.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
