package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/listen"
	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

func (a *app) tailCmd() *cobra.Command {
	var events []string
	var noAttempts bool
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow the tenant's events and delivery attempts live",
		Long: `tail prints each event of the tenant as the dispatcher fans it out, and each
delivery attempt with its status, until interrupted. A dropped stream
resumes where it stopped (within the dispatcher's listen window).
--events filters events; attempts are always shown unless --no-attempts.
With -o json every item is one JSON line.`,
		Example: `  hookyard tail
  hookyard tail --events 'stripe.invoice.*' --no-attempts
  hookyard tail -o json | jq 'select(.attempt.attempt.statusCode >= 500)'`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Stream()
			if err != nil {
				return err
			}
			out := a.out()
			f := &listen.Follower{
				Client:  c,
				Request: &dispatcherv1.StreamEventsRequest{EventTypes: splitList(events), IncludeAttempts: !noAttempts},
				Log:     a.stderr,
				OnReady: func(r *dispatcherv1.StreamReady, resumed bool) {
					switch {
					case !resumed:
						fmt.Fprintln(a.stderr, "Following events and attempts (^C to quit)")
					case r.GetGap():
						fmt.Fprintln(a.stderr, "Reconnected; some items may have been missed.")
					}
				},
				OnItem: func(_ context.Context, r *dispatcherv1.StreamEventsResponse) error {
					return printTail(out, r)
				},
			}
			return f.Run(cmd.Context())
		},
	}
	cmd.Flags().StringSliceVar(&events, "events", nil, "only these event types (topic patterns over <source>.<type>)")
	cmd.Flags().BoolVar(&noAttempts, "no-attempts", false, "show events only")
	return cmd
}

func printTail(out output.Printer, r *dispatcherv1.StreamEventsResponse) error {
	if out.IsJSON() {
		return out.JSONMessage(r, false)
	}
	now := time.Now().Format(time.DateTime)
	if ev := r.GetEvent(); ev != nil {
		_, err := fmt.Fprintf(out.W, "%s  event    %-32s %s  (%d bytes)\n", now, ev.GetRoutingKey(), ev.GetMessageId(), len(ev.GetEvent().GetData()))
		return err
	}
	if at := r.GetAttempt(); at != nil {
		a := at.GetAttempt()
		result := fmt.Sprintf("%d %s", a.GetStatusCode(), a.GetLatency().AsDuration().Round(time.Millisecond))
		if a.GetErrorClass() != "" {
			result += "  " + a.GetErrorClass() + ": " + output.Cut(a.GetError(), 80)
		} else if a.GetStatusCode()/100 == 2 {
			result += "  delivered"
		}
		_, err := fmt.Fprintf(out.W, "%s  attempt  %s -> %s #%d  %s\n", now, at.GetMessageId(), a.GetEndpointId(), a.GetNumber(), result)
		return err
	}
	return nil
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
