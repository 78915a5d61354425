package namespace

import (
	"encoding/json"
	"strings"
	"testing"
)

func decodeJSON(t testing.TB, s string) any {
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTemplateExpand(t *testing.T) {
	doc := decodeJSON(t, `{"id":"evt","data":{"object":{"id":"cus_1","n":12345678901234567890,"ok":true,"items":[{"sku":"a"}]}}}`)
	cases := map[string]string{
		"customer:{data.object.id}":     "customer:cus_1",
		"{data.object.n}":               "12345678901234567890",
		"x{data.object.ok}y":            "xtruey",
		"sku:{data.object.items.0.sku}": "sku:a",
		"plain":                         "plain",
		"{id}/{data.object.id}":         "evt/cus_1",
	}
	for tmpl, want := range cases {
		tp, err := ParseTemplate(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		got, err := tp.Expand(doc)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", tmpl, got, err, want)
		}
	}
	for _, tmpl := range []string{"{data.missing}", "{data.object}", "{data.object.items.5.sku}", "{data.object.id.x}"} {
		tp, err := ParseTemplate(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.Expand(doc); err == nil {
			t.Errorf("%s expanded to %q, want an error", tmpl, got)
		}
	}
	for _, bad := range []string{"", "{", "}", "a{}b", "{a..b}", "{a{b}}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted", bad)
		}
	}
}

func FuzzTemplate(f *testing.F) {
	f.Add("customer:{data.object.id}", `{"data":{"object":{"id":"x"}}}`)
	f.Fuzz(func(t *testing.T, tmpl, doc string) {
		tp, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		var v any
		if json.Unmarshal([]byte(doc), &v) != nil {
			return
		}
		if s, err := tp.Expand(v); err == nil && ValidKey(s) != nil {
			t.Fatalf("expanded to an invalid key %q", s)
		}
	})
}
