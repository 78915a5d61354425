package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The tarball has docker load's manifest.json naming the tag, and the image
// read back has the binary executable at its entrypoint, a nonroot user and
// the CA bundle; building twice gives the same digest.
func TestBuildWritesLoadableTarball(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "svc")
	if err := os.WriteFile(bin, []byte("\x7fELF binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(certs, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Service: "svc", Binary: bin, CACerts: certs, Ports: []string{"8080/tcp"}, Arch: "amd64", Created: time.Unix(0, 0).UTC()}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag("hookyard/svc:test")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "svc.tar")
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		t.Fatal(err)
	}

	// docker load reads manifest.json first.
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	readTarEntry(t, out, "manifest.json", func(r io.Reader) {
		if err := json.NewDecoder(r).Decode(&manifest); err != nil {
			t.Fatal(err)
		}
	})
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "hookyard/svc:test" || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json = %+v", manifest)
	}

	back, err := tarball.ImageFromPath(out, &ref)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != User || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/local/bin/svc" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config = %+v", cf.Config)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ports = %v", cf.Config.ExposedPorts)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	seen := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
	}
	if h := seen["usr/local/bin/svc"]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("binary missing or not executable: %+v", h)
	}
	for _, f := range []string{"etc/passwd", "etc/ssl/certs/ca-certificates.crt", "tmp/"} {
		if seen[f] == nil {
			t.Errorf("%s missing", f)
		}
	}

	again, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("digests differ: %s %s", d1, d2)
	}
}

func readTarEntry(t *testing.T, path, entry string, fn func(io.Reader)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s has no %s", path, entry)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == entry {
			fn(tr)
			return
		}
	}
}
