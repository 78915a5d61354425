package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
)

func (a *app) sourcesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "sources", Aliases: []string{"source", "src"}, Args: args(),
		Short: "Manage the webhook sources third parties send to (ingress)",
	}
	var p paging
	list := &cobra.Command{
		Use: "list", Short: "List sources", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Sources()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListSources(ctx, &ingressv1.ListSourcesRequest{PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, s := range res.GetSources() {
				rows = append(rows, []string{s.GetName(), s.GetProvider(), "/webhooks/" + s.GetName(), output.Time(s.GetCreateTime())})
			}
			return a.out().List(res, []string{"NAME", "PROVIDER", "PATH", "CREATED"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(list)
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a source (secrets masked)", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Sources()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			s, err := c.GetSource(ctx, &ingressv1.GetSourceRequest{Name: in[0]})
			if err != nil {
				return err
			}
			return a.out().Message(s, sourceRows(s))
		},
	}
	var src ingressv1.Source
	var tolerance time.Duration
	create := &cobra.Command{
		Use: "create NAME --provider PROVIDER --secret SECRET", Short: "Create a source; providers POST to /webhooks/NAME", Args: args("NAME"),
		Example: `  hookyard sources create stripe --provider stripe --secret whsec_...
  hookyard sources create gh --provider github --secret "$GITHUB_WEBHOOK_SECRET"`,
		RunE: func(cmd *cobra.Command, in []string) error {
			if src.Provider == "" {
				return usagef("--provider is required")
			}
			src.Name = in[0]
			if cmd.Flags().Changed("tolerance") {
				src.Tolerance = durationpb.New(tolerance)
			}
			c, err := a.clients.Sources()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			s, err := c.CreateSource(ctx, &ingressv1.CreateSourceRequest{Source: &src})
			if err != nil {
				return err
			}
			return a.out().Message(s, sourceRows(s))
		},
	}
	cf := create.Flags()
	cf.StringVar(&src.Provider, "provider", "", "signature scheme: stripe, github, slack, shopify, twilio, standard, paddle, pagerduty, square, sendgrid, discord, zoom, linear, intercom, mailgun or hmac")
	cf.StringArrayVar(&src.Secrets, "secret", nil, "signing secret or public key (repeatable during a rotation)")
	cf.DurationVar(&tolerance, "tolerance", 0, "accepted clock skew of signed timestamps (default 5m; 0s turns the check off)")
	cf.StringVar(&src.PublicUrl, "public-url", "", "the URL the provider signs (Twilio, Square)")
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a source", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Sources()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.DeleteSource(ctx, &ingressv1.DeleteSourceRequest{Name: in[0]})
			if err != nil {
				return err
			}
			return a.done(res, "Deleted source "+in[0])
		},
	}
	cmd.AddCommand(list, get, create, del)
	return cmd
}

func sourceRows(s *ingressv1.Source) [][2]string {
	return [][2]string{
		{"Name", s.GetName()}, {"Provider", s.GetProvider()}, {"Webhook path", "/webhooks/" + s.GetName()},
		{"Secrets", output.Or(strings.Join(s.GetSecrets(), " "))}, {"Tolerance", output.Duration(s.GetTolerance())},
		{"Public URL", output.Or(s.GetPublicUrl())}, {"Created", output.Time(s.GetCreateTime())},
	}
}

func (a *app) eventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "events", Aliases: []string{"event"}, Args: args(),
		Short: "Publish events onto the bus as ingress does (ingress)",
	}
	var req ingressv1.PublishRequest
	var data string
	publish := &cobra.Command{
		Use: "publish --type TYPE", Short: "Publish an event to hookyard.events", Args: args(),
		Example: `  hookyard events publish --source app --type user.created --data '{"id": 7}'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Type == "" {
				return usagef("--type is required")
			}
			v, err := jsonValue(data, "--data")
			if err != nil {
				return err
			}
			req.Data = v
			c, err := a.clients.Events()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.Publish(ctx, &req)
			if err != nil {
				return err
			}
			text := "Published " + res.GetId() + " as " + res.GetRoutingKey()
			if res.GetDuplicate() {
				text += " (duplicate: already published)"
			}
			return a.done(res, text)
		},
	}
	f := publish.Flags()
	f.StringVar(&req.Id, "id", "", "event id (default: generated)")
	f.StringVar(&req.Source, "source", "", "source name (default app)")
	f.StringVar(&req.Type, "type", "", "event type (required)")
	f.StringVar(&req.Subject, "subject", "", "CloudEvents subject")
	f.StringVar(&data, "data", "null", "payload as JSON, or @file")
	cmd.AddCommand(publish)
	return cmd
}
