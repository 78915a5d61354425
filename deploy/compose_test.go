package deploy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads a compose file the way `docker compose` does,
// validating it against the compose specification's JSON schema.
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("hookyard", true) })
}

func TestComposeFileFollowsSpec(t *testing.T) {
	p, err := loadCompose(t, "compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		svc, ok := p.Services[s]
		if !ok {
			t.Errorf("no service %s", s)
			continue
		}
		if svc.Build == nil || svc.Build.Target != s {
			t.Errorf("%s: not built from its Dockerfile target", s)
		}
		if hc := svc.HealthCheck; hc == nil || strings.Join(hc.Test, " ") != "CMD /usr/local/bin/"+s+" -healthcheck" {
			t.Errorf("%s: healthcheck %v", s, svc.HealthCheck)
		}
		for _, dep := range []string{"rabbitmq", "redis"} {
			if svc.DependsOn[dep].Condition != types.ServiceConditionHealthy {
				t.Errorf("%s: does not wait for %s to be healthy", s, dep)
			}
		}
		if !svc.ReadOnly || svc.User == "" {
			t.Errorf("%s: runs with a writable root or as root", s)
		}
		if svc.Environment["HOOKYARD_AMQP_URL"] == nil || !strings.Contains(*svc.Environment["HOOKYARD_AMQP_URL"], "@rabbitmq:5672") {
			t.Errorf("%s: HOOKYARD_AMQP_URL does not name the rabbitmq service", s)
		}
	}
	for _, dep := range []string{"rabbitmq", "redis"} {
		if p.Services[dep].HealthCheck == nil {
			t.Errorf("%s has no healthcheck", dep)
		}
	}
}
