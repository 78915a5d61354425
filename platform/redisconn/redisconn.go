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
//	redis://[user:pass@]host:port/db         one server (rediss:// for TLS)
//	redis://host:port?master_name=m&addr=h2:p Sentinel (the hosts are sentinels)
//	redis+cluster://host:port?addr=h2:p      Cluster (rediss+cluster:// for TLS)
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
	case u.Query().Has("master_name"):
		opt, err := redis.ParseFailoverURL(rawURL)
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
