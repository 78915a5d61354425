// Package cli defines the hookyard commands.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/client"
	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
)

// Exit codes, for scripts.
const (
	ExitOK          = 0 // success
	ExitError       = 1 // any other failure
	ExitUsage       = 2 // bad command line or an argument the service rejected (InvalidArgument)
	ExitNotFound    = 3 // the resource does not exist (NotFound)
	ExitAuth        = 4 // missing or wrong API key (Unauthenticated, PermissionDenied)
	ExitUnavailable = 5 // service unreachable, overloaded or timed out: try again
	ExitConflict    = 6 // already exists, or the resource's state forbids the call
	ExitTaskFailed  = 7 // tasks wait: the task ended failed or cancelled
)

const exitCodesHelp = `Exit codes:
  0  success
  1  any other failure
  2  bad command line, or an argument the service rejected
  3  not found
  4  missing or wrong API key
  5  service unreachable, overloaded or timed out (try again)
  6  conflict: already exists, or the resource's state forbids the call
  7  tasks wait: the task ended failed or cancelled`

// usageError marks an error in the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitError carries its own exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

// ExitCode maps an error to the exit code of the process.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, client.ErrNoKey):
		if errors.Is(err, client.ErrNoKey) {
			return ExitAuth
		}
		return ExitUsage
	case errors.Is(err, context.DeadlineExceeded):
		return ExitUnavailable
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.OutOfRange:
			return ExitUsage
		case codes.NotFound:
			return ExitNotFound
		case codes.Unauthenticated, codes.PermissionDenied:
			return ExitAuth
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return ExitUnavailable
		case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
			return ExitConflict
		}
	}
	return ExitError
}

// message is the text printed for err.
func message(err error) string {
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}

// app holds what every command shares.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	flags      client.Settings
	configPath string
	format     string
	timeout    time.Duration

	clients *client.Clients
}

// Main runs the command line with the process environment and returns the
// exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Run(ctx, args, stdout, stderr, os.Getenv)
}

// Run runs the command line and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.clients != nil {
		a.clients.Close()
	}
	if err == nil {
		return ExitOK
	}
	if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		err = usageError{err}
	}
	fmt.Fprintf(stderr, "hookyard: %s\n", message(err))
	if _, ok := errors.AsType[usageError](err); ok {
		fmt.Fprintln(stderr, "Run 'hookyard --help' for usage.")
	}
	return ExitCode(err)
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "hookyard",
		Short: "Manage Hookyard and receive its webhooks on your machine",
		Long: `hookyard talks gRPC to the four Hookyard services: ingress (sources, events),
dispatcher (endpoints, messages, dead letters, listen, tail), jobs (tasks,
schedules, queues) and cache (namespaces and keys).

Where the services are and which API key to use come from flags, then
HOOKYARD_* variables, then a profile of the config file
(~/.config/hookyard/config.yaml, or $HOOKYARD_CONFIG), then the defaults
(127.0.0.1:9090-9093, as 'make dev' runs them).

` + exitCodesHelp,
		Example: `  export HOOKYARD_API_KEY=devkey-123
  hookyard endpoints create --url https://example.com/hook --event-type 'stripe.#'
  hookyard listen --forward-to http://localhost:3000/hook --events 'stripe.#'
  hookyard tail
  hookyard tasks enqueue http --args '{"url":"https://example.com"}' --wait
  hookyard endpoints list -o json | jq -r '.endpoints[].id'`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.setup,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.APIKey, "api-key", "", "API key (env HOOKYARD_API_KEY)")
	pf.StringVar(&a.flags.Profile, "profile", "", "profile of the config file (env HOOKYARD_PROFILE; default: its current one)")
	pf.StringVar(&a.configPath, "config", "", "config file (env HOOKYARD_CONFIG; default ~/.config/hookyard/config.yaml)")
	pf.StringVar(&a.flags.Ingress, "ingress", "", "ingress gRPC address (env HOOKYARD_INGRESS_ADDR; default "+client.DefaultIngress+")")
	pf.StringVar(&a.flags.Dispatcher, "dispatcher", "", "dispatcher gRPC address (env HOOKYARD_DISPATCHER_ADDR; default "+client.DefaultDispatcher+")")
	pf.StringVar(&a.flags.Jobs, "jobs", "", "jobs gRPC address (env HOOKYARD_JOBS_ADDR; default "+client.DefaultJobs+")")
	pf.StringVar(&a.flags.Cache, "cache", "", "cache gRPC address (env HOOKYARD_CACHE_ADDR; default "+client.DefaultCache+")")
	pf.BoolVar(&a.flags.TLS, "tls", false, "use TLS to reach the services (env HOOKYARD_TLS=true)")
	pf.StringVarP(&a.format, "output", "o", output.Table, "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "time limit of each call")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	root.AddGroup(&cobra.Group{ID: "dev", Title: "Local development:"}, &cobra.Group{ID: "manage", Title: "Resources:"})
	for _, c := range []*cobra.Command{a.listenCmd(), a.tailCmd()} {
		c.GroupID = "dev"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		a.sourcesCmd(), a.eventsCmd(), a.endpointsCmd(), a.messagesCmd(), a.deadLettersCmd(), a.deliveryQueuesCmd(),
		a.tasksCmd(), a.chainsCmd(), a.groupsCmd(), a.schedulesCmd(), a.queuesCmd(), a.cacheCmd(),
	} {
		c.GroupID = "manage"
		root.AddCommand(c)
	}
	root.AddCommand(a.configCmd())
	return root
}

// setup resolves the settings before any command runs.
func (a *app) setup(cmd *cobra.Command, _ []string) error {
	if a.format != output.Table && a.format != output.JSON {
		return usagef("-o %q: use table or json", a.format)
	}
	path := a.configPath
	if path == "" {
		path = client.DefaultPath(a.getenv)
	}
	f, err := client.LoadFile(path)
	if err != nil {
		return err
	}
	s, err := client.Resolve(a.flags, cmd.Flags().Changed("tls"), a.getenv, f)
	if err != nil {
		return usageError{err}
	}
	a.clients = client.New(s)
	return nil
}

func (a *app) out() output.Printer { return output.Printer{W: a.stdout, Format: a.format} }

// call returns the context of one call.
func (a *app) call(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// args checks the number of positional arguments, as a usage error.
func args(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, got []string) error {
		if len(got) != len(names) {
			if len(names) == 0 {
				return usagef("takes no arguments, got %d", len(got))
			}
			return usagef("takes %s, got %d argument(s)", strings.Join(names, " "), len(got))
		}
		return nil
	}
}
