package deploy

import (
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Metrics that other software exports, which the rules and dashboard may use.
var externalMetrics = map[string]string{
	"rabbitmq_queue_messages_ready": "RabbitMQ's Prometheus plugin, per-queue metrics",
	"rabbitmq_queue_messages":       "RabbitMQ's Prometheus plugin, per-queue metrics",
	"grpc_server_handled_total":     "go-grpc-middleware's Prometheus provider, registered by platform/server",
}

var metricLiteral = regexp.MustCompile(`"(hookyard_[a-z0-9_]+)"`)

// serviceMetrics returns the metric names the services register: every
// "hookyard_…" string in their non-test Go code.
func serviceMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, root := range []string{"../platform", "../services"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricLiteral.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the services", len(names))
	}
	return names
}

// checkMetrics reports the series an expression selects that nobody exports.
func checkMetrics(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	n := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		n++
		name := vs.Name
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !known[name] && !known[base] && externalMetrics[name] == "" {
			t.Errorf("%s: metric %s is not exported by any service", where, name)
		}
		return nil
	})
	if n == 0 {
		t.Errorf("%s: selects no metric", where)
	}
}

// The PromQL parser promtool uses, with its default options.
var promql = parser.NewParser(parser.Options{})

// The alert rules pass the checks of `promtool check rules` (the same
// rulefmt code, unknown fields refused) and name only metrics that exist.
func TestAlertRules(t *testing.T) {
	known := serviceMetrics(t)
	files, _ := filepath.Glob("prometheus/*.yaml")
	if len(files) == 0 {
		t.Fatal("no rule files")
	}
	alerts := map[string]bool{}
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
		for _, err := range errs {
			t.Errorf("%v", err)
		}
		if groups == nil {
			continue
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				alerts[r.Alert] = true
				checkMetrics(t, f+": "+r.Alert, r.Expr, known)
				if r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
					t.Errorf("%s: %s needs a summary and a severity", f, r.Alert)
				}
			}
		}
	}
	for _, a := range []string{"HookyardDeadLettersGrowing", "HookyardEndpointDisabled", "HookyardQueueBacklog", "HookyardConfirmLatencyHigh", "HookyardBreakerOpen", "HookyardEventLagHigh"} {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}
}

// A rule file with a misspelled field fails the check, as in promtool.
func TestMisspelledRuleFails(t *testing.T) {
	_, errs := rulefmt.ParseFile("testdata/bad/alerts.yaml", false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) == 0 || !strings.Contains(errs[0].Error(), "annotation") {
		t.Fatalf("errors = %v, want one naming the misspelled field", errs)
	}
}

// The dashboard is valid JSON whose every query parses and selects metrics
// that exist.
func TestGrafanaDashboard(t *testing.T) {
	known := serviceMetrics(t)
	data, err := os.ReadFile("grafana/hookyard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) < 6 {
		t.Fatalf("dashboard %q uid %q with %d panels", d.Title, d.UID, len(d.Panels))
	}
	// Grafana replaces template variables before Prometheus sees a query.
	vars := strings.NewReplacer("$namespace", ".*", "$__rate_interval", "5m")
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkMetrics(t, "panel "+p.Title, vars.Replace(tg.Expr), known)
		}
	}
}
