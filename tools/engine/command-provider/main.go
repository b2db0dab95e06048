// Command pulumi-resource-command is the lab's stand-in for the pulumi-command provider, used only by the engine
// tests (tools/engine/build.sh).
//
// Why a stand-in: the module proxy this project builds from serves no version of
// github.com/pulumi/pulumi-command/provider. This one is written for the lab, on the same library as the real
// provider (pulumi-go-provider's infer, v1.3.0, the version pulumi-command v1.2.1 uses), and keeps the behaviour of
// v1.2.1 that the lab relies on:
//   - command:local:Command: in a preview Create only makes an ID and runs nothing; outputs that are not inputs
//     (stdout, stderr) are then unknown. Update runs `update`, or else `create`. Delete runs the delete command stored
//     in the state, with the stored dir, environment and stdin. A change to `triggers` replaces the resource.
//   - command:local:run (the invoke behind run/run_output) runs its command every time, previews included.
//   - Commands run as `/bin/sh -c <command>` unless `interpreter` says otherwise, in `dir` (default: the provider's
//     working directory), with `environment` added, `stdin` fed in, the previous stdout/stderr in
//     PULUMI_COMMAND_STDOUT/PULUMI_COMMAND_STDERR unless addPreviousOutputInEnv is false, and their output streamed
//     to the engine unless `logging` turns it off. A failed command fails with
//     `exit status N: running "<command>":\n<stdout and stderr>`; one trailing newline is cut from stdout/stderr.
//   - Logged output is read line by line with a bufio.Scanner (64 KiB per line at most), stdout and stderr through one
//     pipe; at a longer line reading stops for good, so the command blocks and the update hangs, as with v1.2.1
//     (local/local.go says how; the stand-in only adds a diagnostic that says why).
//
// Not implemented (the lab does not use them): the remote resources, assetPaths and archivePaths (accepted and
// ignored, so the schema still takes everything the real Python SDK sends).
package main

import (
	"context"
	"fmt"
	"os"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"

	"istio-ambient-lab/tools/engine/command-provider/local"
)

// Stamped by the build (-X main.version=...) with the pulumi-command release the lab pins.
var version = "0.0.0-dev"

func main() {
	provider := infer.Provider(infer.Options{
		// infer names the tokens after the Go package: command:local:Command and command:local:run, as in the
		// real provider.
		Resources: []infer.InferredResource{infer.Resource(&local.Command{})},
		Functions: []infer.InferredFunction{infer.Function(&local.Run{})},
	})
	if err := p.RunProvider(context.Background(), "command", version, provider); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %s", err)
		os.Exit(1)
	}
}
