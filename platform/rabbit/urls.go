package rabbit

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hookyard/hookyard/platform/ssrf"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ParseURLs splits the value of HOOKYARD_AMQP_URL into the broker URLs it
// lists. One URL is one broker; several, separated by commas, are the
// nodes of one RabbitMQ cluster, tried in order: Conn connects to the
// first that answers and, when that connection is lost, moves on to the
// next one. A comma inside a URL (in a password) must be percent-encoded
// as %2C.
//
// Every URL must parse as an AMQP URI and all must name the same virtual
// host: the nodes of one cluster share their virtual hosts, so a list
// that mixes them is a mistake that would otherwise show only as topology
// appearing and disappearing on a failover. Errors never echo a password.
func ParseURLs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no AMQP URL")
	}
	parts := strings.Split(s, ",")
	urls := make([]string, 0, len(parts))
	seen := map[string]bool{}
	vhost := ""
	for i, p := range parts {
		p = strings.TrimSpace(p)
		where := fmt.Sprintf("AMQP URL %d of %d", i+1, len(parts))
		if p == "" {
			return nil, fmt.Errorf("%s is empty (stray comma?)", where)
		}
		uri, err := amqp.ParseURI(p)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				// The parser quotes what it could not parse, which may be a
				// password (a raw comma in one splits it in two).
				err = errors.New("malformed user, host or port")
			}
			return nil, fmt.Errorf("%s: %w (percent-encode reserved characters in a user name or password, a comma as %%2C)", where, err)
		}
		if seen[p] {
			return nil, fmt.Errorf("%s %q is listed twice", where, ssrf.RedactURL(p))
		}
		seen[p] = true
		if i == 0 {
			vhost = uri.Vhost
		} else if uri.Vhost != vhost {
			return nil, fmt.Errorf("%s %q names virtual host %q, the first names %q: the nodes of one cluster share their virtual hosts", where, ssrf.RedactURL(p), uri.Vhost, vhost)
		}
		urls = append(urls, p)
	}
	return urls, nil
}

// nodeAddr is the host:port of an AMQP URL, for logs (never the password).
func nodeAddr(raw string) string {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", uri.Host, uri.Port)
}
