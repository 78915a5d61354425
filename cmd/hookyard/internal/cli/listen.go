package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/listen"
	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/sign"
)

func (a *app) listenCmd() *cobra.Command {
	var (
		forwardTo string
		events    []string
		headers   []string
		secret    string
		reqTime   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "listen --forward-to URL",
		Short: "Forward the tenant's events to a local URL, signed like a real delivery",
		Long: `listen streams the tenant's events from the dispatcher and forwards each to
--forward-to, signed with the Standard Webhooks scheme (webhook-id,
webhook-timestamp, webhook-signature) with a secret of this session, which
it prints (or --secret). Each event and the status it got are printed.

No endpoint or public URL is needed: every event of the tenant that the
dispatcher fans out is streamed, whether or not an endpoint matches. If the
stream drops, listen reconnects and receives what arrived meanwhile, as long
as it was within the dispatcher's listen window (10 minutes by default).`,
		Example: `  hookyard listen --forward-to http://localhost:3000/hook
  hookyard listen --forward-to http://localhost:3000/hook --events 'stripe.#' --events 'github.push'
  hookyard listen --forward-to http://localhost:3000/hook --secret "$WEBHOOK_SECRET"`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := url.Parse(forwardTo)
			if forwardTo == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("--forward-to must be an http or https URL, like http://localhost:3000/hook")
			}
			if secret == "" {
				secret = a.getenv("HOOKYARD_LISTEN_SECRET")
			}
			var key []byte
			if secret == "" {
				if secret, key, err = listen.NewSecret(); err != nil {
					return err
				}
			} else if key, err = sign.ParseSecret(secret); err != nil {
				return usagef("--secret: %v", err)
			}
			hdr := map[string]string{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok || strings.TrimSpace(k) == "" {
					return usagef("--header %q: use 'Name: value'", h)
				}
				hdr[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			c, err := a.clients.Stream()
			if err != nil {
				return err
			}
			fw := &listen.Forwarder{URL: forwardTo, Secret: key, Headers: hdr, HTTP: &http.Client{Timeout: reqTime}}
			out := a.out()
			f := &listen.Follower{
				Client:  c,
				Request: &dispatcherv1.StreamEventsRequest{EventTypes: splitList(events)},
				Log:     a.stderr,
				OnReady: func(r *dispatcherv1.StreamReady, resumed bool) {
					switch {
					case !resumed:
						fmt.Fprintf(a.stderr, "Ready! Forwarding events to %s\nWebhook signing secret: %s\n(^C to quit)\n", forwardTo, secret)
					case r.GetGap():
						fmt.Fprintln(a.stderr, "Reconnected, but the outage outlasted the listen window: some events may have been missed.")
					default:
						fmt.Fprintln(a.stderr, "Reconnected; events sent meanwhile follow.")
					}
				},
				OnItem: func(ctx context.Context, r *dispatcherv1.StreamEventsResponse) error {
					ev := r.GetEvent()
					if ev == nil {
						return nil
					}
					res := fw.Forward(ctx, ev)
					if ctx.Err() != nil {
						return nil
					}
					return printForward(out, ev, res, forwardTo)
				},
			}
			return f.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&forwardTo, "forward-to", "", "local URL to POST each event to (required)")
	fl.StringSliceVar(&events, "events", nil, "only these event types, as topic patterns over <source>.<type> ('*' one word, '#' any); repeat or separate with commas")
	fl.StringArrayVarP(&headers, "header", "H", nil, "extra request header 'Name: value' (repeatable)")
	fl.StringVar(&secret, "secret", "", "signing secret whsec_... to use instead of a new one (env HOOKYARD_LISTEN_SECRET)")
	fl.DurationVar(&reqTime, "request-timeout", 30*time.Second, "time limit of each forwarded request")
	return cmd
}

// forwardLine is a listen line in -o json.
type forwardLine struct {
	Time       string `json:"time"`
	MessageID  string `json:"messageId"`
	RoutingKey string `json:"routingKey"`
	URL        string `json:"url"`
	Status     int    `json:"status,omitempty"`
	LatencyMS  int64  `json:"latencyMs"`
	Error      string `json:"error,omitempty"`
}

func printForward(out output.Printer, ev *dispatcherv1.StreamedEvent, res listen.Result, to string) error {
	now := time.Now()
	if out.IsJSON() {
		l := forwardLine{Time: now.UTC().Format(time.RFC3339Nano), MessageID: ev.GetMessageId(), RoutingKey: ev.GetRoutingKey(),
			URL: to, Status: res.Status, LatencyMS: res.Latency.Milliseconds()}
		if res.Err != nil {
			l.Error = res.Err.Error()
		}
		return writeJSONLine(out.W, l)
	}
	_, err := fmt.Fprintf(out.W, "%s  --> %s [%s]\n%s  <-- %s POST %s\n",
		now.Format(time.DateTime), ev.GetRoutingKey(), ev.GetMessageId(), now.Format(time.DateTime), res, to)
	return err
}

// splitList splits comma-separated values and drops empty ones.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
