// Package local holds the stand-in's command:local:Command resource and command:local:run invoke (see ../main.go).
package local

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Logging says which of the command's streams go to the engine's log.
type Logging string

func (Logging) Values() []infer.EnumValue[Logging] {
	return []infer.EnumValue[Logging]{
		{Name: "stdout", Value: "stdout"},
		{Name: "stderr", Value: "stderr"},
		{Name: "stdoutAndStderr", Value: "stdoutAndStderr"},
		{Name: "none", Value: "none"},
	}
}

func (l *Logging) logs(stream string) bool {
	return l == nil || string(*l) == stream || *l == "stdoutAndStderr"
}

// Shared by the resource and the invoke, under the input names pulumi-command's schema uses.
type ProcessInputs struct {
	Stdin                  *string            `pulumi:"stdin,optional"`
	Logging                *Logging           `pulumi:"logging,optional"`
	Interpreter            *[]string          `pulumi:"interpreter,optional"`
	Dir                    *string            `pulumi:"dir,optional"`
	Environment            *map[string]string `pulumi:"environment,optional"`
	AssetPaths             *[]string          `pulumi:"assetPaths,optional"`
	ArchivePaths           *[]string          `pulumi:"archivePaths,optional"`
	AddPreviousOutputInEnv *bool              `pulumi:"addPreviousOutputInEnv,optional"`
}

type ProcessOutputs struct {
	Stdout string `pulumi:"stdout"`
	Stderr string `pulumi:"stderr"`
}

type Command struct{}

type CommandInputs struct {
	Triggers *[]any  `pulumi:"triggers,optional" provider:"replaceOnChanges"`
	Create   *string `pulumi:"create,optional"`
	Update   *string `pulumi:"update,optional"`
	Delete   *string `pulumi:"delete,optional"`
	ProcessInputs
}

type CommandState struct {
	CommandInputs
	ProcessOutputs
}

func (*Command) Create(ctx context.Context, req infer.CreateRequest[CommandInputs],
) (infer.CreateResponse[CommandState], error) {
	state := CommandState{CommandInputs: req.Inputs}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil || req.DryRun || req.Inputs.Create == nil {
		return infer.CreateResponse[CommandState]{ID: id, Output: state}, err
	}
	err = execute(ctx, *req.Inputs.Create, state.ProcessInputs, &state.ProcessOutputs)
	return infer.CreateResponse[CommandState]{ID: id, Output: state}, err
}

func (*Command) Update(ctx context.Context, req infer.UpdateRequest[CommandInputs, CommandState],
) (infer.UpdateResponse[CommandState], error) {
	state := CommandState{CommandInputs: req.Inputs, ProcessOutputs: req.State.ProcessOutputs}
	command := req.Inputs.Update
	if command == nil {
		command = req.Inputs.Create
	}
	if req.DryRun || command == nil {
		return infer.UpdateResponse[CommandState]{Output: state}, nil
	}
	err := execute(ctx, *command, state.ProcessInputs, &state.ProcessOutputs)
	return infer.UpdateResponse[CommandState]{Output: state}, err
}

// Delete runs what the state holds, not what the program says now: the program may be gone or changed.
func (*Command) Delete(ctx context.Context, req infer.DeleteRequest[CommandState]) (infer.DeleteResponse, error) {
	if req.State.Delete == nil {
		return infer.DeleteResponse{}, nil
	}
	outputs := req.State.ProcessOutputs
	return infer.DeleteResponse{}, execute(ctx, *req.State.Delete, req.State.ProcessInputs, &outputs)
}

type Run struct{}

type RunInputs struct {
	ProcessInputs
	Command string `pulumi:"command"`
}

type RunOutputs struct {
	RunInputs
	ProcessOutputs
}

func (*Run) Invoke(ctx context.Context, req infer.FunctionRequest[RunInputs]) (infer.FunctionResponse[RunOutputs], error) {
	result := RunOutputs{RunInputs: req.Input}
	err := execute(ctx, req.Input.Command, req.Input.ProcessInputs, &result.ProcessOutputs)
	return infer.FunctionResponse[RunOutputs]{Output: result}, err
}

// tooLongMarker starts the stand-in's diagnostic for an over-long logged line; the engine tests look for it.
const tooLongMarker = "pulumi-command stand-in"

// lockedWriter lets stdout and stderr write into one buffer (for the error text) from two goroutines.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func execute(ctx context.Context, command string, in ProcessInputs, out *ProcessOutputs) error {
	argv := []string{"/bin/sh", "-c"}
	if in.Interpreter != nil && len(*in.Interpreter) > 0 {
		argv = append([]string{}, *in.Interpreter...)
	}
	argv = append(argv, command)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if in.Dir != nil {
		cmd.Dir = *in.Dir
	}
	cmd.Env = os.Environ()
	if in.Environment != nil {
		for key, value := range *in.Environment {
			cmd.Env = append(cmd.Env, key+"="+value)
		}
	}
	if in.AddPreviousOutputInEnv == nil || *in.AddPreviousOutputInEnv {
		if out.Stdout != "" {
			cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDOUT="+out.Stdout)
		}
		if out.Stderr != "" {
			cmd.Env = append(cmd.Env, "PULUMI_COMMAND_STDERR="+out.Stderr)
		}
	}
	if in.Stdin != nil && *in.Stdin != "" {
		cmd.Stdin = strings.NewReader(*in.Stdin)
	}

	var stdout, stderr bytes.Buffer
	combined := &lockedWriter{}
	logReader, logWriter := io.Pipe()
	stdoutTo := []io.Writer{&stdout, combined}
	if in.Logging.logs("stdout") {
		stdoutTo = append(stdoutTo, logWriter)
	}
	stderrTo := []io.Writer{&stderr, combined}
	if in.Logging.logs("stderr") {
		stderrTo = append(stderrTo, logWriter)
	}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(stdoutTo...), io.MultiWriter(stderrTo...)

	logged := make(chan struct{})
	go func() {
		defer close(logged)
		lines := bufio.NewScanner(logReader)
		for lines.Scan() {
			p.GetLogger(ctx).InfoStatus(lines.Text())
		}
		// As in pulumi-command v1.2.1 (provider/pkg/provider/util LogOutput): the scanner holds lines of less than
		// bufio.MaxScanTokenSize (64 KiB); at a longer one it stops, and nothing reads the log pipe again. Writes into
		// it then block, so the command blocks on its output (or, having exited, is never waited for) and the
		// resource never finishes: the update hangs. The stand-in keeps that hang, so tests fail on such a line, and
		// only adds this diagnostic, which the real provider does not print, to say why.
		if errors.Is(lines.Err(), bufio.ErrTooLong) {
			p.GetLogger(ctx).Error(fmt.Sprintf("%s: the command printed a logged line of %d bytes or more; "+
				"pulumi-command stops reading its output here and the command hangs (turn its logging off or "+
				"keep its lines shorter)", tooLongMarker, bufio.MaxScanTokenSize))
		}
	}()
	err := cmd.Run()
	_ = logWriter.Close()
	<-logged
	if err != nil {
		return fmt.Errorf("%w: running %q:\n%s", err, command, combined.buf.String())
	}
	out.Stdout = strings.TrimSuffix(stdout.String(), "\n")
	out.Stderr = strings.TrimSuffix(stderr.String(), "\n")
	return nil
}
