// Command pulumi-language-python is the lab's stand-in for Pulumi's Python language host, used only by the engine
// tests (tools/engine/build.sh).
//
// Why a stand-in: the real host is its own Go module (pulumi/sdk/python/cmd/pulumi-language-python/v3), and the
// module proxy this project builds from serves no version of it. What the engine tests need from a language host is
// small and written here: start Python the way the real host does, through the exec shim
// `pulumi-language-python-exec` that ships in the sdk/v3 module (the build script puts it next to this binary), in
// the virtualenv named by Pulumi.yaml's runtime options, resolved with the real host's own toolchain package
// (sdk/v3/python/toolchain). It does not pack, link, generate code, type-check, debug or install anything.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Stamped by the build (-X main.version=...) with the pulumi release the lab pins.
var version = "dev"

// The exit code with which the Python SDK says it already printed the error for the user: the engine then adds no
// "program exited with non-zero exit code" line of its own.
const exitAfterUserMessage = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	shim          string // pulumi-language-python-exec
	engineAddress string
	// Cancelled by the engine's Cancel RPC (a first Ctrl-C): like the real host, the program is interrupted then,
	// not only when the Run request ends.
	cancelCtx  context.Context
	cancelFunc context.CancelFunc
}

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.String("tracing", "", "ignored: the stand-in emits no traces")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	h := &host{shim: filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")}
	h.cancelCtx, h.cancelFunc = context.WithCancel(context.Background())
	if _, err := os.Stat(h.shim); err != nil {
		fail(fmt.Errorf("the exec shim is missing next to the language host: %w", err))
	}
	if flag.NArg() > 0 {
		h.engineAddress = flag.Arg(0)
	}
	cancel := make(chan bool)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fail(err)
	}
	// The plugin launch protocol: the first line on stdout is the port the engine connects to.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python (lab stand-in): %v\n", err)
	os.Exit(1)
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.EngineAddress
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// pythonOptions reads Pulumi.yaml's runtime options the way the real host does (virtualenv, toolchain).
func pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Root: info.RootDirectory, ProgramDir: info.ProgramDirectory}
	raw := info.GetOptions().AsMap()
	if v, ok := raw["virtualenv"]; ok {
		s, isString := v.(string)
		if !isString {
			return opts, errors.New("virtualenv option must be a string")
		}
		opts.Virtualenv = s
	}
	if v, ok := raw["toolchain"]; ok {
		switch v {
		case "pip":
			opts.Toolchain = toolchain.Pip
		default:
			// The lab uses pip; anything else would need tools the stand-in does not drive.
			return opts, fmt.Errorf("the lab's language host stand-in supports only toolchain pip, not %v", v)
		}
	}
	return opts, nil
}

// Lists the installed Python distributions that carry a pulumi-plugin.json (resource packages and the plugin they
// need), printing one JSON object per line.
const listPluginsScript = `
import importlib.metadata, json
for dist in importlib.metadata.distributions():
    for f in dist.files or ():
        if f.name == "pulumi-plugin.json":
            data = json.loads(f.read_text())
            data["distribution"] = dist.metadata["Name"]
            print(json.dumps(data))
`

// GetRequiredPackages names the provider plugins of the installed Pulumi packages, with the version from their
// pulumi-plugin.json, so the engine can look each one up in its plugin folder before the program runs.
func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	opts, err := pythonOptions(req.Info)
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginsScript)
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the virtualenv's Pulumi packages: %w", err)
	}
	var packages []*pulumirpc.PackageDependency
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var plugin struct {
			Resource bool   `json:"resource"`
			Name     string `json:"name"`
			Version  string `json:"version"`
			Server   string `json:"server"`
		}
		if err := json.Unmarshal([]byte(line), &plugin); err != nil {
			return nil, fmt.Errorf("reading a pulumi-plugin.json: %w", err)
		}
		if !plugin.Resource || plugin.Name == "" {
			continue
		}
		packages = append(packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: plugin.Name, Version: "v" + strings.TrimPrefix(plugin.Version, "v"),
			Server: plugin.Server,
		})
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: packages}, nil
}

func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	// As in the real host: the engine asks GetRequiredPackages instead.
	return nil, status.Error(codes.Unimplemented, "GetRequiredPlugins is replaced by GetRequiredPackages")
}

// Run starts the exec shim with the virtualenv's python, passing what the engine sent as the shim's flags and the
// config as PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS, like the real host.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	opts, err := pythonOptions(req.Info)
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	args := []string{h.shim}
	flagIfSet := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	flagIfSet("monitor", req.GetMonitorAddress())
	flagIfSet("engine", h.engineAddress)
	flagIfSet("project", req.GetProject())
	flagIfSet("root_directory", req.GetInfo().GetRootDirectory())
	flagIfSet("stack", req.GetStack())
	flagIfSet("pwd", req.GetPwd())
	flagIfSet("dry_run", strconv.FormatBool(req.GetDryRun()))
	flagIfSet("parallel", strconv.Itoa(int(req.GetParallel())))
	flagIfSet("organization", req.GetOrganization())
	args = append(args, req.GetInfo().GetEntryPoint())
	args = append(args, req.GetArgs()...)

	config, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}

	// Interrupted when either the Cancel RPC fires or the Run request ends.
	runCtx, stop := context.WithCancel(h.cancelCtx)
	defer stop()
	context.AfterFunc(ctx, stop)
	cmd, err := tc.Command(runCtx, args...)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.WaitDelay = 5 * time.Second
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	// As the real host: no config, no PULUMI_CONFIG (the exec shim reads an absent one as empty, a `null` not).
	if req.GetConfig() != nil {
		cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config))
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON))

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.ExitStatus() == exitAfterUserMessage {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d",
				exitErr.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf(
			"problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// InstallDependencies does nothing: ./lab.sh builds venv/ from requirements.txt before anything runs, and the
// tests must never reach a package index.
func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	return nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	return &pulumirpc.AboutResponse{Executable: "python", Version: "lab stand-in"}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

func (h *host) RuntimeOptionsPrompts(ctx context.Context, req *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.cancelFunc()
	return &emptypb.Empty{}, nil
}
