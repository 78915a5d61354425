package deploy

import (
	"os"
	"strings"
	"testing"

	"github.com/hookyard/hookyard/deploy/manifest"
)

// A misspelled field or kind fails the decode, naming what is wrong; the
// same documents with the field spelled right pass, so the failure is the
// typo's.
func TestMisspelledManifestFails(t *testing.T) {
	for file, want := range map[string]string{
		"deployment.yaml":     `unknown field "readinesProbe"`,
		"scaledobject.yaml":   `unknown field "maxReplicasCount"`,
		"servicemonitor.yaml": `unknown field "pth"`,
		"kind.yaml":           "unknown kind apps/v1, Kind=Deploymnet",
	} {
		data, err := os.ReadFile("testdata/bad/" + file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = manifest.DecodeAll(data)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", file, err, want)
		}
		fixed := strings.NewReplacer("readinesProbe", "readinessProbe", "maxReplicasCount", "maxReplicaCount",
			"pth:", "path:", "Deploymnet", "Deployment").Replace(string(data))
		if _, err := manifest.DecodeAll([]byte(fixed)); err != nil {
			t.Errorf("%s with the typo fixed: %v", file, err)
		}
	}
}

func TestMisspelledComposeFails(t *testing.T) {
	_, err := loadCompose(t, "testdata/bad/compose.yaml")
	if err == nil || !strings.Contains(err.Error(), "healthchek") {
		t.Fatalf("got %v, want an error naming healthchek", err)
	}
}
