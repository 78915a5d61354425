// Command images builds the services' container images without a Docker
// engine: each a static binary (CGO_ENABLED=0) on an empty base, written to
// <out>/<service>.tar for `docker load -i`. Run it with `make images`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/hookyard/hookyard/deploy/image"
)

var ports = map[string][]string{
	"ingress": {"8080/tcp", "9090/tcp"}, "dispatcher": {"8081/tcp", "9091/tcp"},
	"cache": {"8082/tcp", "9092/tcp"}, "jobs": {"8083/tcp", "9093/tcp"},
}

func main() {
	root := flag.String("root", "..", "repository root")
	out := flag.String("out", "../dist/images", "directory for the tarballs")
	repo := flag.String("repo", "hookyard", "image repository prefix: <repo>/<service>:<tag>")
	tag := flag.String("tag", "dev", "image tag")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH of the images")
	certs := flag.String("ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied into the images for outbound TLS (empty: none)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	services := flag.Args()
	if len(services) == 0 {
		services = []string{"ingress", "dispatcher", "cache", "jobs"}
	}
	if err := run(ctx, *root, *out, *repo, *tag, *arch, *certs, services); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root, out, repo, tag, arch, certs string, services []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hookyard-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// SOURCE_DATE_EPOCH makes the images reproducible; the epoch by default.
	created := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		created = time.Unix(sec, 0).UTC()
	}
	for _, s := range services {
		if _, ok := ports[s]; !ok {
			return fmt.Errorf("unknown service %q", s)
		}
		bin := filepath.Join(tmp, s)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./services/"+s+"/cmd/"+s)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", s, err)
		}
		img, err := image.Build(image.Spec{
			Service: s, Binary: bin, CACerts: certs, Ports: ports[s], Arch: arch, Created: created,
			Labels: map[string]string{"org.opencontainers.image.title": "hookyard-" + s},
		})
		if err != nil {
			return err
		}
		ref, err := name.NewTag(repo + "/" + s + ":" + tag)
		if err != nil {
			return err
		}
		path := filepath.Join(out, s+".tar")
		if err := tarball.WriteToFile(path, ref, img); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("images: %s  %s  %s\n", path, ref, digest)
	}
	return nil
}
