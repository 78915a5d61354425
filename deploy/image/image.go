// Package image builds a service's container image without a Docker
// engine: one layer holding the static binary, CA certificates and a
// passwd entry for the unprivileged user, on an empty base, written as a
// tarball that `docker load` (and podman, kind, containerd's ctr) accept.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the uid and gid the services run as (distroless's "nonroot").
const User = "65532:65532"

// Spec describes one image.
type Spec struct {
	Service string   // binary name, installed as /usr/local/bin/<Service>
	Binary  string   // path of the static binary
	CACerts string   // path of a CA bundle for outbound TLS; empty for none
	Ports   []string // exposed ports, e.g. "8080/tcp"
	Arch    string   // GOARCH, e.g. amd64
	Created time.Time
	Labels  map[string]string
}

// Build returns the image of s.
func Build(s Spec) (v1.Image, error) {
	files := []file{
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "home/", dir: true, mode: 0o755},
		{name: "home/nonroot/", dir: true, mode: 0o700, uid: 65532},
		{name: "tmp/", dir: true, mode: 0o1777},
		{name: "usr/", dir: true, mode: 0o755},
		{name: "usr/local/", dir: true, mode: 0o755},
		{name: "usr/local/bin/", dir: true, mode: 0o755},
	}
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Service, err)
	}
	files = append(files, file{name: "usr/local/bin/" + s.Service, mode: 0o755, data: bin})
	if s.CACerts != "" {
		certs, err := os.ReadFile(s.CACerts)
		if err != nil {
			return nil, fmt.Errorf("image %s: CA certificates: %w", s.Service, err)
		}
		files = append(files,
			file{name: "etc/ssl/", dir: true, mode: 0o755},
			file{name: "etc/ssl/certs/", dir: true, mode: 0o755},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: certs})
	}
	layerTar, err := tarFiles(files, s.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Service, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: v1.History{
		Created: v1.Time{Time: s.Created}, CreatedBy: "hookyard images: " + s.Service, Comment: "static binary, CA certificates, nonroot user",
	}})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Service, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", s.Arch
	cf.Created = v1.Time{Time: s.Created}
	cf.Config.User = User
	cf.Config.WorkingDir = "/"
	cf.Config.Entrypoint = []string{"/usr/local/bin/" + s.Service}
	cf.Config.Env = []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Labels = s.Labels
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range s.Ports {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name string
	dir  bool
	mode int64
	uid  int
	data []byte
}

// tarFiles writes files with fixed times and owners, so the same inputs
// give the same layer digest.
func tarFiles(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: mtime, Uid: f.uid, Gid: f.uid, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
