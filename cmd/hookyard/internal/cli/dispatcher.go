package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// paging adds --page-size and --page-token.
type paging struct {
	size  int32
	token string
}

func (p *paging) flags(cmd *cobra.Command) {
	cmd.Flags().Int32Var(&p.size, "page-size", 0, "results per page (default and maximum set by the service)")
	cmd.Flags().StringVar(&p.token, "page-token", "", "page to show, from a previous result")
}

func (a *app) endpointsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "endpoints",
		Aliases: []string{"endpoint", "ep"},
		Short:   "Manage the subscriber URLs that receive signed webhooks (dispatcher)",
		Args:    args(),
	}
	cmd.AddCommand(a.endpointsList(), a.endpointsGet(), a.endpointsCreate(), a.endpointsDelete(),
		a.endpointsRotate(), a.endpointsSetDisabled(true), a.endpointsSetDisabled(false), a.endpointsRecover(), a.endpointsSendTest())
	return cmd
}

func endpointRows(e *dispatcherv1.Endpoint) [][2]string {
	rows := [][2]string{
		{"ID", e.GetId()}, {"URL", e.GetUrl()}, {"Description", output.Or(e.GetDescription())},
		{"Event types", output.Or(strings.Join(e.GetEventTypes(), ", "))},
		{"Disabled", disabledText(e)},
		{"Rate limit", strconv.Itoa(int(e.GetRateLimit())) + "/s"}, {"Max in flight", strconv.Itoa(int(e.GetMaxInFlight()))},
		{"Timeout", output.Duration(e.GetTimeout())}, {"Failing since", output.Time(e.GetFailingSince())},
		{"Created", output.Time(e.GetCreateTime())},
	}
	if h := e.GetHealth(); h != nil {
		rows = append(rows,
			[2]string{"Breaker", breakerText(h)},
			[2]string{"Failures in a row", strconv.Itoa(int(h.GetFailureCount()))},
			[2]string{"In flight", strconv.Itoa(int(h.GetInFlight())) + " of " + strconv.Itoa(int(e.GetMaxInFlight()))},
			[2]string{"Held", strconv.FormatInt(h.GetHeldCount(), 10)})
		if e.GetRateLimit() > 0 {
			rows = append(rows, [2]string{"Rate tokens", strconv.FormatFloat(h.GetRateTokens(), 'f', 1, 64) + " of " + strconv.Itoa(int(e.GetRateLimit()))})
		}
	}
	if e.GetSecret() != "" {
		rows = append(rows, [2]string{"Secret", e.GetSecret() + "  (shown once)"})
	}
	return rows
}

// breakerText is the worst breaker over the replicas, e.g. "open until
// 12:00:05 (1 replica)".
func breakerText(h *dispatcherv1.EndpointHealth) string {
	st := output.Or(h.GetBreakerState())
	if h.GetBreakerUntil() != nil {
		st += " until " + output.Time(h.GetBreakerUntil())
	}
	if n := h.GetBreakerReplicas(); n == 1 {
		st += " (1 replica)"
	} else if n > 1 {
		st += fmt.Sprintf(" (%d replicas)", n)
	}
	return st
}

func disabledText(e *dispatcherv1.Endpoint) string {
	if !e.GetDisabled() {
		return "no"
	}
	return "yes (" + output.Or(e.GetDisabledReason()) + ")"
}

func (a *app) endpointsList() *cobra.Command {
	var p paging
	cmd := &cobra.Command{
		Use: "list", Short: "List endpoints", Args: args(),
		Example: `  hookyard endpoints list
  hookyard endpoints list -o json | jq -r '.endpoints[] | select(.disabled) | .id'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListEndpoints(ctx, &dispatcherv1.ListEndpointsRequest{PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, e := range res.GetEndpoints() {
				h := e.GetHealth()
				rows = append(rows, []string{e.GetId(), output.Cut(e.GetUrl(), 60), output.Or(strings.Join(e.GetEventTypes(), ",")), disabledText(e), output.Time(e.GetFailingSince()),
					output.Or(h.GetBreakerState()), strconv.Itoa(int(h.GetInFlight())), strconv.FormatInt(h.GetHeldCount(), 10)})
			}
			return a.out().List(res, []string{"ID", "URL", "EVENT TYPES", "DISABLED", "FAILING SINCE", "BREAKER", "IN FLIGHT", "HELD"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(cmd)
	return cmd
}

func (a *app) endpointsGet() *cobra.Command {
	return &cobra.Command{
		Use: "get ID", Short: "Show an endpoint", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			e, err := c.GetEndpoint(ctx, &dispatcherv1.GetEndpointRequest{Id: in[0]})
			if err != nil {
				return err
			}
			return a.out().Message(e, endpointRows(e))
		},
	}
}

func (a *app) endpointsCreate() *cobra.Command {
	var (
		ep      dispatcherv1.Endpoint
		headers []string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use: "create --url URL", Short: "Create an endpoint; its signing secret is shown once", Args: args(),
		Example: `  hookyard endpoints create --url https://example.com/hook --event-type 'stripe.invoice.*'
  hookyard endpoints create --url https://example.com/hook -o json | jq -r .secret`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ep.Url == "" {
				return usagef("--url is required")
			}
			ep.EventTypes = splitList(ep.EventTypes)
			h, err := keyValues(headers, ":")
			if err != nil {
				return err
			}
			ep.Headers = h
			if timeout > 0 {
				ep.Timeout = durationpb.New(timeout)
			}
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			e, err := c.CreateEndpoint(ctx, &dispatcherv1.CreateEndpointRequest{Endpoint: &ep})
			if err != nil {
				return err
			}
			return a.out().Message(e, endpointRows(e))
		},
	}
	f := cmd.Flags()
	f.StringVar(&ep.Url, "url", "", "http or https URL (required)")
	f.StringVar(&ep.Description, "description", "", "free text")
	f.StringSliceVar(&ep.EventTypes, "event-type", nil, "topic pattern over <source>.<type> (repeatable; none means every event)")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra request header 'Name: value' (repeatable)")
	f.Int32Var(&ep.RateLimit, "rate-limit", 0, "requests per second (0 unlimited)")
	f.Int32Var(&ep.MaxInFlight, "max-in-flight", 0, "concurrent requests (0: the service default)")
	f.DurationVar(&timeout, "request-timeout", 0, "per-request timeout (0: the service default)")
	f.BoolVar(&ep.RetryClientErrors, "retry-client-errors", false, "retry 4xx answers other than 410")
	return cmd
}

func (a *app) endpointsDelete() *cobra.Command {
	return &cobra.Command{
		Use: "delete ID", Short: "Delete an endpoint and drop its pending deliveries", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.DeleteEndpoint(ctx, &dispatcherv1.DeleteEndpointRequest{Id: in[0]})
			if err != nil {
				return err
			}
			return a.done(res, "Deleted endpoint "+in[0])
		},
	}
}

func (a *app) endpointsRotate() *cobra.Command {
	var overlap time.Duration
	cmd := &cobra.Command{
		Use: "rotate ID", Short: "Issue a new signing secret; the old one keeps signing during the overlap", Args: args("ID"),
		Example: `  hookyard endpoints rotate ep_123 --overlap 1h`,
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			req := &dispatcherv1.RotateEndpointSecretRequest{Id: in[0]}
			if overlap > 0 {
				req.Overlap = durationpb.New(overlap)
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.RotateEndpointSecret(ctx, req)
			if err != nil {
				return err
			}
			return a.out().Message(res, [][2]string{{"Secret", res.GetSecret() + "  (shown once)"}, {"Previous secret ends", output.Time(res.GetPreviousExpireTime())}})
		},
	}
	cmd.Flags().DurationVar(&overlap, "overlap", 0, "how long the old secret keeps signing (default 24h)")
	return cmd
}

func (a *app) endpointsSetDisabled(disabled bool) *cobra.Command {
	use, short := "enable ID", "Enable an endpoint again (its held messages stay held; see recover)"
	if disabled {
		use, short = "disable ID", "Disable an endpoint; its messages are held for recover"
	}
	return &cobra.Command{
		Use: use, Short: short, Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			e, err := c.UpdateEndpoint(ctx, &dispatcherv1.UpdateEndpointRequest{
				Endpoint:   &dispatcherv1.Endpoint{Id: in[0], Disabled: disabled},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"disabled"}},
			})
			if err != nil {
				return err
			}
			return a.out().Message(e, endpointRows(e))
		},
	}
}

func (a *app) endpointsRecover() *cobra.Command {
	var since time.Duration
	cmd := &cobra.Command{
		Use: "recover ID", Short: "Re-enable an endpoint and resend what failed or was held", Args: args("ID"),
		Example: `  hookyard endpoints recover ep_123 --since 48h`,
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			req := &dispatcherv1.RecoverEndpointRequest{Id: in[0]}
			if since > 0 {
				req.SinceTime = timestamppb.New(time.Now().Add(-since))
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.RecoverEndpoint(ctx, req)
			if err != nil {
				return err
			}
			return a.done(res, fmt.Sprintf("Recovered endpoint %s: %d deliveries queued again", in[0], res.GetResentCount()))
		},
	}
	cmd.Flags().DurationVar(&since, "since", 0, "resend what failed or was held this long ago or later (default 7 days)")
	return cmd
}

func (a *app) endpointsSendTest() *cobra.Command {
	return &cobra.Command{
		Use: "send-test ID", Short: "Send a ping event to an endpoint", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Endpoints()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.SendTestEvent(ctx, &dispatcherv1.SendTestEventRequest{Id: in[0]})
			if err != nil {
				return err
			}
			return a.done(res, "Sent test message "+res.GetMessageId()+"; see: hookyard messages get "+res.GetMessageId())
		},
	}
}

func (a *app) messagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "messages", Aliases: []string{"message", "msg"}, Args: args(),
		Short: "Send messages to endpoints and read their deliveries and attempts (dispatcher)",
	}
	var m dispatcherv1.Message
	var data string
	send := &cobra.Command{
		Use: "send --type TYPE", Short: "Send a message to every matching endpoint", Args: args(),
		Example: `  hookyard messages send --type order.created --data '{"id": 42}'
  hookyard messages send --id order-42-created --source shop --type order.created --data @order.json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if m.Type == "" {
				return usagef("--type is required")
			}
			v, err := jsonValue(data, "--data")
			if err != nil {
				return err
			}
			m.Data = v
			c, err := a.clients.Messages()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.SendMessage(ctx, &dispatcherv1.SendMessageRequest{Message: &m})
			if err != nil {
				return err
			}
			return a.out().Message(res, messageRows(res))
		},
	}
	send.Flags().StringVar(&m.Id, "id", "", "idempotency key (default: generated)")
	send.Flags().StringVar(&m.Source, "source", "", "source name (default app)")
	send.Flags().StringVar(&m.Type, "type", "", "event type, e.g. invoice.paid (required)")
	send.Flags().StringVar(&data, "data", "null", "payload as JSON, or @file")

	get := &cobra.Command{
		Use: "get ID", Short: "Show a message and its delivery to each endpoint", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Messages()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.GetMessage(ctx, &dispatcherv1.GetMessageRequest{Id: in[0]})
			if err != nil {
				return err
			}
			if a.out().IsJSON() {
				return a.out().JSONMessage(res, true)
			}
			if err := a.out().Message(res, messageRows(res)); err != nil {
				return err
			}
			var rows [][]string
			for _, d := range res.GetDeliveries() {
				rows = append(rows, []string{d.GetEndpointId(), d.GetStatus(), strconv.Itoa(int(d.GetAttempts())), output.Time(d.GetNextAttemptTime())})
			}
			fmt.Fprintln(a.stdout)
			return a.out().List(res, []string{"ENDPOINT", "STATUS", "ATTEMPTS", "NEXT ATTEMPT"}, rows, "")
		},
	}
	var p paging
	attempts := &cobra.Command{
		Use: "attempts ID", Short: "List the attempts made for a message", Args: args("ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Messages()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListMessageAttempts(ctx, &dispatcherv1.ListMessageAttemptsRequest{Id: in[0], PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, at := range res.GetAttempts() {
				rows = append(rows, attemptRow(at))
			}
			return a.out().List(res, []string{"ENDPOINT", "#", "TIME", "STATUS", "LATENCY", "ERROR"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(attempts)
	cmd.AddCommand(send, get, attempts, a.resendCmd("resend ID", "Deliver a message again to its endpoints (or one of them)"))
	return cmd
}

func attemptRow(at *dispatcherv1.Attempt) []string {
	errText := at.GetErrorClass()
	if at.GetError() != "" {
		errText += ": " + output.Cut(at.GetError(), 50)
	}
	return []string{at.GetEndpointId(), strconv.Itoa(int(at.GetNumber())), output.Time(at.GetTime()), strconv.Itoa(int(at.GetStatusCode())), output.Duration(at.GetLatency()), output.Or(errText)}
}

func messageRows(m *dispatcherv1.Message) [][2]string {
	return [][2]string{{"ID", m.GetId()}, {"Source", m.GetSource()}, {"Type", m.GetType()}, {"Created", output.Time(m.GetCreateTime())}, {"Deliveries", strconv.Itoa(len(m.GetDeliveries()))}}
}

func (a *app) resendCmd(use, short string) *cobra.Command {
	var ep string
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args("MESSAGE_ID"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Messages()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ResendMessage(ctx, &dispatcherv1.ResendMessageRequest{Id: in[0], EndpointId: ep})
			if err != nil {
				return err
			}
			return a.done(res, fmt.Sprintf("Resent message %s: %d deliveries queued", in[0], res.GetResentCount()))
		},
	}
	cmd.Flags().StringVar(&ep, "endpoint", "", "only to this endpoint")
	return cmd
}

func (a *app) deadLettersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "dead-letters", Aliases: []string{"dlq"}, Args: args(),
		Short: "List deliveries that failed for good, and resend them (dispatcher)",
	}
	var p paging
	var ep string
	list := &cobra.Command{
		Use: "list", Short: "List dead letters, newest first", Args: args(),
		Example: `  hookyard dead-letters list --endpoint ep_123
  hookyard dead-letters list -o json | jq -r '.deadLetters[].messageId' | xargs -n1 hookyard dead-letters resend`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Messages()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListDeadLetters(ctx, &dispatcherv1.ListDeadLettersRequest{EndpointId: ep, PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, d := range res.GetDeadLetters() {
				last := d.GetLastAttempt()
				rows = append(rows, []string{d.GetMessageId(), output.Or(d.GetEndpointId()), output.Time(d.GetTime()), strconv.Itoa(int(last.GetStatusCode())), output.Cut(d.GetReason(), 50)})
			}
			return a.out().List(res, []string{"MESSAGE", "ENDPOINT", "TIME", "LAST STATUS", "REASON"}, rows, res.GetNextPageToken())
		},
	}
	list.Flags().StringVar(&ep, "endpoint", "", "only this endpoint's")
	p.flags(list)
	cmd.AddCommand(list, a.resendCmd("resend MESSAGE_ID", "Deliver a dead-lettered message again"))
	return cmd
}

func (a *app) deliveryQueuesCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delivery-queues", Aliases: []string{"dq"}, Args: args(),
		Short: "Show the depths of the dispatcher's broker queues (shared by all tenants)",
		Long: `Shows the dispatcher's broker queues: events, deliveries, the delay queues
in front of deliveries, and the dead-letter queues, with the messages ready in
each and its consumers. The queues are shared by all tenants, so every key sees
the same totals. Messages delivered to a consumer and not yet acknowledged are
not counted: AMQP does not report them.`,
		Example: `  hookyard delivery-queues
  hookyard delivery-queues -o json | jq '[.queues[] | select(.kind == "delay") | .ready | tonumber] | add'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.DeliveryQueues()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListQueues(ctx, &dispatcherv1.ListQueuesRequest{})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, q := range res.GetQueues() {
				ready := strconv.FormatInt(q.GetReady(), 10)
				if q.GetMissing() {
					ready = "missing"
				}
				rows = append(rows, []string{q.GetName(), q.GetKind(), output.Duration(q.GetDelay()), ready, strconv.Itoa(int(q.GetConsumers()))})
			}
			return a.out().List(res, []string{"QUEUE", "KIND", "DELAY", "READY", "CONSUMERS"}, rows, "")
		},
	}
}
