package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hookyard/hookyard/deploy/manifest"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var services = []string{"ingress", "dispatcher", "cache", "jobs"}

// queue-driven services scale with KEDA, the others with a CPU HPA.
var kedaScaled = map[string]bool{"dispatcher": true, "jobs": true}

// Every YAML file under k8s/, patches included, decodes strictly: a
// kustomization against kustomize's own type, everything else against the
// Kubernetes API types (KEDA against mirror structs).
func TestManifestFilesDecodeStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir("k8s", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		if d.Name() == "kustomization.yaml" {
			var k kusttypes.Kustomization
			if err := yaml.UnmarshalStrict(data, &k); err != nil {
				t.Errorf("%s: %v", path, err)
			}
			return nil
		}
		objs, err := manifest.DecodeAll(data)
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if len(objs) == 0 {
			t.Errorf("%s: no objects", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Fatalf("found only %d manifest files under k8s/", n)
	}
}

// build runs kustomize on dir and decodes every object it renders.
func build(t *testing.T, dir string) []manifest.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.DecodeAll(out)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return objs
}

func find[T any](objs []manifest.Object, kind, name string) *T {
	for _, o := range objs {
		if o.GVK.Kind == kind && o.Name == name {
			if v, ok := o.Value.(*T); ok {
				return v
			}
		}
	}
	return nil
}

// The base and each overlay render, decode strictly, and give every service
// what running it at scale needs.
func TestKustomizeBuilds(t *testing.T) {
	for _, dir := range []string{"k8s/base", "k8s/overlays/dev", "k8s/overlays/prod"} {
		t.Run(dir, func(t *testing.T) {
			objs := build(t, dir)
			for _, s := range services {
				checkService(t, objs, s)
			}
			if find[monitoringv1.ServiceMonitor](objs, "ServiceMonitor", "hookyard") == nil {
				t.Error("no ServiceMonitor")
			}
			if n := countKind(objs, "NetworkPolicy"); n < 3 {
				t.Errorf("%d NetworkPolicies", n)
			}
			if strings.Contains(dir, "overlays") {
				for _, o := range objs {
					if o.GVK.Kind != "Namespace" && o.Value.(interface{ GetNamespace() string }).GetNamespace() == "" {
						t.Errorf("%s %s has no namespace", o.GVK.Kind, o.Name)
					}
				}
			}
		})
	}
}

func countKind(objs []manifest.Object, kind string) int {
	n := 0
	for _, o := range objs {
		if o.GVK.Kind == kind {
			n++
		}
	}
	return n
}

func checkService(t *testing.T, objs []manifest.Object, s string) {
	d := find[appsv1.Deployment](objs, "Deployment", s)
	if d == nil {
		t.Errorf("%s: no Deployment", s)
		return
	}
	if d.Spec.Replicas != nil {
		t.Errorf("%s: Deployment sets replicas, which fights its autoscaler on every apply", s)
	}
	pod := d.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: pod may run as root", s)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers", s, len(pod.Containers))
	}
	c := pod.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: root filesystem writable or privilege escalation allowed", s)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: cpu and memory requests and a memory limit are required (the HPA's utilisation is relative to the request)", s)
	}
	want := []string{"/usr/local/bin/" + s, "-healthcheck"}
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, want) {
		t.Errorf("%s: readiness probe is not %v", s, want)
	}
	if c.LivenessProbe == nil || c.StartupProbe == nil {
		t.Errorf("%s: liveness or startup probe missing", s)
	}
	for _, e := range []string{"HOOKYARD_AMQP_URL", "HOOKYARD_REDIS_URL", "HOOKYARD_API_KEYS", "HOOKYARD_HTTP_ADDR", "HOOKYARD_GRPC_ADDR"} {
		if !slices.ContainsFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == e }) {
			t.Errorf("%s: %s not set", s, e)
		}
	}
	if !strings.Contains(c.Image, s) {
		t.Errorf("%s: image %q", s, c.Image)
	}
	svc := find[corev1.Service](objs, "Service", s)
	if svc == nil || len(svc.Spec.Ports) != 2 {
		t.Errorf("%s: Service with http and grpc ports missing", s)
	}
	pdb := find[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", s)
	if pdb == nil || pdb.Spec.Selector == nil || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != s {
		t.Errorf("%s: PodDisruptionBudget missing or selecting other pods", s)
	}
	hpa := find[autoscalingv2.HorizontalPodAutoscaler](objs, "HorizontalPodAutoscaler", s)
	so := find[manifest.ScaledObject](objs, "ScaledObject", s)
	if kedaScaled[s] {
		if hpa != nil {
			t.Errorf("%s: has its own HPA next to KEDA's", s)
		}
		if so == nil || so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != s {
			t.Fatalf("%s: no ScaledObject targeting it", s)
		}
		var types []string
		for _, tr := range so.Spec.Triggers {
			types = append(types, tr.Type)
			if tr.Type == "rabbitmq" && !strings.HasPrefix(tr.Metadata["queueName"], "hookyard."+s+".") {
				t.Errorf("%s: scales on queue %q", s, tr.Metadata["queueName"])
			}
			if tr.AuthenticationRef != nil && find[manifest.TriggerAuthentication](objs, "TriggerAuthentication", tr.AuthenticationRef.Name) == nil {
				t.Errorf("%s: TriggerAuthentication %s missing", s, tr.AuthenticationRef.Name)
			}
		}
		if !slices.Contains(types, "rabbitmq") || !slices.Contains(types, "cpu") {
			t.Errorf("%s: triggers %v, want rabbitmq and cpu", s, types)
		}
	} else {
		if so != nil {
			t.Errorf("%s: has a ScaledObject", s)
		}
		if hpa == nil || hpa.Spec.ScaleTargetRef.Name != s || len(hpa.Spec.Metrics) == 0 || hpa.Spec.Metrics[0].Resource == nil ||
			hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
			t.Errorf("%s: no CPU HPA targeting it", s)
		}
	}
	_ = networkingv1.NetworkPolicy{}
}
