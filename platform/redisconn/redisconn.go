// Package redisconn opens Redis from a single URL, so that moving from one
// server to Sentinel or Cluster is a configuration change, not a code change.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/redis/go-redis/v9"
)

// Open returns a client for rawURL:
//
//	redis://[user:pass@]host:port/db          one server (rediss:// for TLS)
//	redis+sentinel://host:port/db?master_name=m&addr=h2:p&password=pw
//	                                          Sentinel (rediss+sentinel:// for TLS)
//	redis+cluster://host:port?addr=h2:p       Cluster (rediss+cluster:// for TLS)
//
// For Sentinel the hosts are the sentinels (more with addr=), the client
// asks them for the primary of master_name and follows it across
// failovers; user:pass@ authenticates to the sentinels, password= and
// username= to the primary. redis://host:port?master_name=m is the same
// as redis+sentinel://.
func Open(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// The parser's error quotes the URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis url %q: %w", ssrf.RedactURL(rawURL), err)
	}
	switch {
	case strings.HasSuffix(u.Scheme, "+cluster"):
		u.Scheme = strings.TrimSuffix(u.Scheme, "+cluster")
		opt, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis cluster url: %w", err)
		}
		return redis.NewClusterClient(opt), nil
	case strings.HasSuffix(u.Scheme, "+sentinel") || u.Query().Has("master_name"):
		u.Scheme = strings.TrimSuffix(u.Scheme, "+sentinel")
		if u.Query().Get("master_name") == "" {
			return nil, errors.New("redis sentinel url: master_name is required (the name the sentinels monitor the primary by, e.g. ?master_name=mymaster)")
		}
		opt, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis sentinel url: %w", err)
		}
		return redis.NewFailoverClient(opt), nil
	default:
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewClient(opt), nil
	}
}

// Check is a readiness probe.
func Check(ctx context.Context, c redis.UniversalClient) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}
