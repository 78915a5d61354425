package suite

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hookyard/hookyard/platform/redisconn"
)

// AddVHost creates a RabbitMQ virtual host for guest, with rabbitmqctl
// when it can run here, else with the management API. A vhost of its own
// keeps the suite's exchanges and queues apart from everything else on a
// shared broker: the services declare fixed names such as hookyard.events.
func AddVHost(ctx context.Context, vhost string) error {
	if err := ctl(ctx, "add_vhost", vhost); err == nil {
		if err := ctl(ctx, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"); err != nil {
			return fmt.Errorf("grant guest access to vhost %s: %w", vhost, err)
		}
		return nil
	} else if mgmtErr := mgmt(ctx, http.MethodPut, "/api/vhosts/"+url.PathEscape(vhost), ""); mgmtErr != nil {
		return fmt.Errorf("create RabbitMQ vhost %s: rabbitmqctl: %v; management API: %v", vhost, err, mgmtErr)
	}
	return mgmt(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/guest", `{"configure":".*","write":".*","read":".*"}`)
}

// DeleteVHost deletes a virtual host and everything in it.
func DeleteVHost(ctx context.Context, vhost string) error {
	if err := ctl(ctx, "delete_vhost", vhost); err == nil {
		return nil
	} else if mgmtErr := mgmt(ctx, http.MethodDelete, "/api/vhosts/"+url.PathEscape(vhost), ""); mgmtErr != nil {
		return fmt.Errorf("delete RabbitMQ vhost %s: rabbitmqctl: %v; management API: %v", vhost, err, mgmtErr)
	}
	return nil
}

func ctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func mgmt(ctx context.Context, method, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:15672"+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}

// CleanRedis removes the keys of a run: everything under the prefixes the
// suite gave the services, and the ingress keys naming the run's id.
// Ingress has no key prefix setting, so the tests name their tenants and
// sources with the id (NewID), which is what tells their keys apart.
func CleanRedis(ctx context.Context, redisURL, id string) (int, error) {
	// Opened as the services open it, so a Sentinel URL reaches the
	// current primary.
	rdb, err := redisconn.Open(redisURL)
	if err != nil {
		return 0, err
	}
	defer rdb.Close()
	patterns := []string{id + ":*", "{" + id + ":*", "hookyard:ingress:*" + id + "*"}
	removed := 0
	for _, p := range patterns {
		iter := rdb.Scan(ctx, 0, p, 1000).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			n, err := rdb.Unlink(ctx, batch...).Result()
			removed += int(n)
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) >= 500 {
				if err := flush(); err != nil {
					return removed, err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return removed, fmt.Errorf("scan %s: %w", p, err)
		}
		if err := flush(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// QueueDepth is the number of messages in every queue of the vhost, read
// with rabbitmqctl (-1 if it cannot be read).
func QueueDepth(ctx context.Context, vhost string) int {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages").Output()
	if err != nil {
		return -1
	}
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			if n, err := strconv.Atoi(f[1]); err == nil {
				total += n
			}
		}
	}
	return total
}
