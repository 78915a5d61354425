// Package manifest decodes Kubernetes manifests strictly against the real
// API types, so that a misspelled or misplaced field is an error instead
// of being dropped silently by the API server's defaulting decoder.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest.
type Object struct {
	GVK  schema.GroupVersionKind
	Name string
	// Value is a pointer to the typed object (*appsv1.Deployment,
	// *ScaledObject, …).
	Value any
}

var scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// newTyped returns an empty value of the type that gvk names.
func newTyped(gvk schema.GroupVersionKind) (any, error) {
	switch gvk {
	case ScaledObjectGVK:
		return new(ScaledObject), nil
	case TriggerAuthenticationGVK:
		return new(TriggerAuthentication), nil
	}
	obj, err := scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("unknown kind %s: %w", gvk, err)
	}
	return obj, nil
}

// Decode decodes one YAML document strictly: unknown and duplicate fields
// and unknown kinds are errors.
func Decode(doc []byte) (Object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return Object{}, err
	}
	if head.APIVersion == "" || head.Kind == "" {
		return Object{}, errors.New("apiVersion and kind are required")
	}
	gv, err := schema.ParseGroupVersion(head.APIVersion)
	if err != nil {
		return Object{}, err
	}
	gvk := gv.WithKind(head.Kind)
	v, err := newTyped(gvk)
	if err != nil {
		return Object{}, err
	}
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return Object{}, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	return Object{GVK: gvk, Name: head.Metadata.Name, Value: v}, nil
}

// Split returns the non-empty documents of a multi-document YAML stream.
func Split(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufioReader(data))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

// DecodeAll decodes every document of data.
func DecodeAll(data []byte) ([]Object, error) {
	docs, err := Split(data)
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(docs))
	for i, d := range docs {
		o, err := Decode(d)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		out = append(out, o)
	}
	return out, nil
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }

// stripComments drops comment-only lines, so a document of comments alone
// counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}
