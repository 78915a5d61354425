package cli

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/output"
	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
)

func (a *app) cacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "cache", Args: args(),
		Short: "Read, write and invalidate cached keys, and list namespaces (cache)",
	}
	get := &cobra.Command{
		Use: "get NAMESPACE KEY", Short: "Read a key (through the origin for read-through namespaces)", Args: args("NAMESPACE", "KEY"),
		Long: "get prints the value's bytes as they are, for piping; -o json prints the entry with the value in base64.",
		Example: `  hookyard cache get users 42
  hookyard cache get users 42 -o json | jq .hit`,
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Cache()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			e, err := c.GetKey(ctx, &cachev1.GetKeyRequest{Ns: in[0], Key: in[1]})
			if err != nil {
				return err
			}
			if a.out().IsJSON() {
				return a.out().JSONMessage(e, true)
			}
			_, err = a.stdout.Write(e.GetValue())
			return err
		},
	}
	var ttl time.Duration
	var tags []string
	put := &cobra.Command{
		Use: "put NAMESPACE KEY VALUE", Short: "Write a key (VALUE, or @file, or @- for stdin)", Args: args("NAMESPACE", "KEY", "VALUE"),
		Example: `  hookyard cache put users 42 '{"name":"Ada"}' --ttl 10m --tag team-7
  curl -s https://example.com/users/42 | hookyard cache put users 42 @-`,
		RunE: func(cmd *cobra.Command, in []string) error {
			v, err := readArg(in[2])
			if err != nil {
				return usagef("VALUE: %v", err)
			}
			e := &cachev1.Entry{Value: v, Tags: splitList(tags)}
			if ttl > 0 {
				e.Ttl = durationpb.New(ttl)
			}
			c, err := a.clients.Cache()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.PutKey(ctx, &cachev1.PutKeyRequest{Ns: in[0], Key: in[1], Entry: e})
			if err != nil {
				return err
			}
			return a.done(res, "Stored "+in[0]+"/"+in[1]+" ("+strconv.Itoa(len(v))+" bytes, expires "+output.Time(res.GetExpireTime())+")")
		},
	}
	put.Flags().DurationVar(&ttl, "ttl", 0, "time to live (default: the namespace's)")
	put.Flags().StringSliceVar(&tags, "tag", nil, "tag to invalidate by (repeatable)")
	del := &cobra.Command{
		Use: "delete NAMESPACE KEY", Short: "Delete a key", Args: args("NAMESPACE", "KEY"),
		RunE: func(cmd *cobra.Command, in []string) error {
			c, err := a.clients.Cache()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.DeleteKey(ctx, &cachev1.DeleteKeyRequest{Ns: in[0], Key: in[1]})
			if err != nil {
				return err
			}
			return a.done(res, "Deleted "+in[0]+"/"+in[1])
		},
	}
	var inv cachev1.InvalidateNamespaceRequest
	invalidate := &cobra.Command{
		Use: "invalidate NAMESPACE (--key K | --pattern P | --tag T | --prefix P | --all)", Short: "Invalidate keys of a namespace", Args: args("NAMESPACE"),
		Example: `  hookyard cache invalidate users --key 42 --key 43
  hookyard cache invalidate users --tag team-7
  hookyard cache invalidate users --all`,
		RunE: func(cmd *cobra.Command, in []string) error {
			inv.Ns = in[0]
			if !inv.All && len(inv.Keys)+len(inv.Patterns)+len(inv.Tags)+len(inv.Prefixes) == 0 {
				return usagef("name what to invalidate: --key, --pattern, --tag, --prefix or --all")
			}
			c, err := a.clients.Cache()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.InvalidateNamespace(ctx, &inv)
			if err != nil {
				return err
			}
			return a.done(res, "Invalidated "+itoa(res.GetInvalidated())+" key(s) of "+in[0])
		},
	}
	fl := invalidate.Flags()
	fl.StringArrayVar(&inv.Keys, "key", nil, "key (repeatable)")
	fl.StringArrayVar(&inv.Patterns, "pattern", nil, "key glob pattern (repeatable)")
	fl.StringArrayVar(&inv.Tags, "tag", nil, "tag (repeatable)")
	fl.StringArrayVar(&inv.Prefixes, "prefix", nil, "key prefix (repeatable)")
	fl.BoolVar(&inv.All, "all", false, "every key of the namespace")

	var p paging
	namespaces := &cobra.Command{
		Use: "namespaces", Aliases: []string{"ns"}, Short: "List namespaces", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.clients.Cache()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			res, err := c.ListNamespaces(ctx, &cachev1.ListNamespacesRequest{PageSize: p.size, PageToken: p.token})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, n := range res.GetNamespaces() {
				rows = append(rows, []string{n.GetName(), output.Or(n.GetStrategy()), output.Duration(n.GetTtl()), output.Cut(output.Or(n.GetOriginUrl()), 50), output.Or(strings.Join(n.GetInvalidateOn(), ","))})
			}
			return a.out().List(res, []string{"NAME", "STRATEGY", "TTL", "ORIGIN", "INVALIDATE ON"}, rows, res.GetNextPageToken())
		},
	}
	p.flags(namespaces)
	cmd.AddCommand(get, put, del, invalidate, namespaces)
	return cmd
}

// jsonText is v as compact JSON; "-" when unset.
func jsonText(v *structpb.Value) string {
	if v == nil {
		return "-"
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func cmdTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
