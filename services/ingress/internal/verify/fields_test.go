package verify

import (
	"encoding/json"
	"strings"
	"testing"
)

// jsonFields must read exactly what json.Unmarshal into jsonText fields
// reads, errors included, whatever the body: it stands in for it on the
// hot path of every provider that names its event in the body.
func FuzzJSONFields(f *testing.F) {
	for _, s := range []string{
		`{"id":"evt_1","type":"invoice.paid","data":{"object":{"id":"inner","type":"x"}}}`,
		`{"ID":"a","Id":"b","iD":"c"}`,
		`{"id":"a","id":null,"type":{"x":1},"type":[1,"]"]}`,
		`{"\u0069d":"esc\"aped\\","ty\u0070e":"t\u00e9"}`,
		`{"\u212As":"kelvin","\u017fk":"long s","id":"\ud800"}`,
		`{"id":12.5e-3,"type":-0}`,
		`[{"id":"in an array"}]`,
		`"id"`, `null`, `  {}  `, `{"id":"unterminated}`, `{"id":1}x`, `{"a":"\\\\"}`,
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		`{"id":"` + "\xff\xfe" + `"}`, "{\"id\":\"a\"}\n",
	} {
		f.Add([]byte(s))
	}
	names := []string{"id", "type", "ks"}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want struct {
			ID   jsonText `json:"id"`
			Type jsonText `json:"type"`
			KS   jsonText `json:"ks"`
		}
		wantErr := decodeJSON(body, &want)
		var got [3]string
		gotErr := jsonFields(body, names, got[:])
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: error %v, encoding/json %v", body, gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		if got != [3]string{string(want.ID), string(want.Type), string(want.KS)} {
			t.Fatalf("%q: read %q, encoding/json %q", body, got, []jsonText{want.ID, want.Type, want.KS})
		}
	})
}

func BenchmarkEventFields(b *testing.B) {
	body := []byte(`{"id":"evt_bench_0000000001","object":"event","type":"invoice.paid","created":1700000000,"livemode":false,"data":{"object":{"object":"invoice","pad":"` +
		strings.Repeat("x", 850) + `"}}}`)
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v struct {
				ID   jsonText `json:"id"`
				Type jsonText `json:"type"`
			}
			if decodeJSON(body, &v) != nil {
				b.Fatal("bad")
			}
		}
	})
	b.Run("jsonFields", func(b *testing.B) {
		b.ReportAllocs()
		names := []string{"id", "type"}
		for b.Loop() {
			var v [2]string
			if jsonFields(body, names, v[:]) != nil {
				b.Fatal("bad")
			}
		}
	})
}

// validJSON must agree with json.Valid on every input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0.5e+10`, `01`, `1.`, `-`, `.5`, `1e`, `tru`, `nulll`, `[1,]`, `{"a":1,}`,
		`{"a" 1}`, `{1:2}`, `"\u12G4"`, `"\x"`, "\"\x01\"", "\"\xff\"", ` [ { "a" : [ true , false , null ] } ] `,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		`"\uD83D\uDE00"`, `[1 2]`, `{"a":"b"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid %v", b, got, want)
		}
	})
}
