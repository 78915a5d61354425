package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hookyard/hookyard/cmd/hookyard/internal/client"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "config", Args: args(),
		Short: "Manage profiles in the config file",
		Long: `Profiles keep the API key and service addresses of an installation, in
~/.config/hookyard/config.yaml (or $HOOKYARD_CONFIG), readable only by you:

  current: dev
  profiles:
    dev:
      api_key: devkey-123
      dispatcher: 127.0.0.1:9091
    prod:
      api_key: ...
      ingress: hooks.example.com:443
      dispatcher: dispatcher.example.com:443
      jobs: jobs.example.com:443
      cache: cache.example.com:443
      tls: true

Flags and HOOKYARD_* variables override the profile.`,
	}
	path := func() string {
		if a.configPath != "" {
			return a.configPath
		}
		return client.DefaultPath(a.getenv)
	}
	var use bool
	set := &cobra.Command{
		Use: "set-profile NAME", Short: "Create or change a profile with the given flags", Args: args("NAME"),
		Example: `  hookyard config set-profile dev --api-key devkey-123 --use
  hookyard config set-profile prod --api-key "$KEY" --dispatcher dispatcher.example.com:443 --tls`,
		RunE: func(cmd *cobra.Command, in []string) error {
			f, err := client.LoadFile(path())
			if err != nil {
				return err
			}
			cur := f.Profiles[in[0]]
			root := cmd.Root().PersistentFlags()
			if root.Changed("api-key") {
				cur.APIKey = a.flags.APIKey
			}
			for name, dst := range map[string]*string{"ingress": &cur.Ingress, "dispatcher": &cur.Dispatcher, "jobs": &cur.Jobs, "cache": &cur.Cache} {
				if root.Changed(name) {
					v, _ := root.GetString(name)
					*dst = v
				}
			}
			if root.Changed("tls") {
				cur.TLS = a.flags.TLS
			}
			f.Profiles[in[0]] = cur
			if use || f.Current == "" {
				f.Current = in[0]
			}
			if err := f.Save(path()); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Saved profile %q in %s (current: %s)\n", in[0], path(), f.Current)
			return nil
		},
	}
	set.Flags().BoolVar(&use, "use", false, "make it the current profile")
	useCmd := &cobra.Command{
		Use: "use NAME", Short: "Make a profile the current one", Args: args("NAME"),
		RunE: func(_ *cobra.Command, in []string) error {
			f, err := client.LoadFile(path())
			if err != nil {
				return err
			}
			if _, ok := f.Profiles[in[0]]; !ok {
				return exitError{ExitNotFound, fmt.Errorf("no profile %q in %s", in[0], path())}
			}
			f.Current = in[0]
			if err := f.Save(path()); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Current profile: %s\n", in[0])
			return nil
		},
	}
	view := &cobra.Command{
		Use: "view", Short: "Show the settings in effect (API key masked) and the profiles", Args: args(),
		RunE: func(_ *cobra.Command, _ []string) error {
			s := a.clients.Settings()
			f, err := client.LoadFile(path())
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Config file:  %s\nProfile:      %s\nAPI key:      %s\nIngress:      %s\nDispatcher:   %s\nJobs:         %s\nCache:        %s\nTLS:          %t\nProfiles:     %s\n",
				path(), orNone(s.Profile), mask(s.APIKey), s.Ingress, s.Dispatcher, s.Jobs, s.Cache, s.TLS, orNone(strings.Join(f.Names(), ", ")))
			return nil
		},
	}
	cmd.AddCommand(set, useCmd, view)
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// mask shows only the start of a key.
func mask(k string) string {
	if k == "" {
		return "(none)"
	}
	if len(k) <= 4 {
		return "****"
	}
	return k[:4] + strings.Repeat("*", 8)
}
