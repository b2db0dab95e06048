//go:build tools

// Package tools keeps in go.mod and go.sum what tools/engine/build.sh builds from this module: the provider's main
// package (copied out of the module at build time, with its schema) and its `go generate` step.
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
