package ingress

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
	"github.com/hookyard/hookyard/platform/redisconn/redistest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The service as New assembles it takes a source through the API and then
// that source's signed webhooks onto the bus; other methods get 405.
func TestAssembledServiceReceivesWebhooks(t *testing.T) {
	rdb, prefix := redistest.New(t, "ingress")
	topo := rabbit.Topology{Events: rabbittest.UniqueName(t, "events"), Unrouted: rabbittest.UniqueName(t, "unrouted")}
	ctx, cancel := context.WithCancel(context.Background())
	conn := rabbit.DialConfig(ctx, rabbittest.URL(), rabbit.Config{Setup: rabbit.DeclareFunc(topo.Declare)})
	in := New(Config{PublisherChannels: 1, KeyPrefix: prefix, DedupePrefix: prefix + ":dedupe", Exchange: topo.Events}, Deps{Rabbit: conn, Redis: rdb})
	t.Cleanup(func() { in.Publisher.Close(); conn.Close(); cancel() })
	srv := httptest.NewServer(in.Webhooks())
	t.Cleanup(srv.Close)

	admin, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Declare(ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(topo.Unrouted, false, false, false)
		_ = ch.ExchangeDelete(topo.Events, false, false)
		_ = ch.ExchangeDelete(topo.Unrouted, false, false)
	})
	q := rabbittest.TempQueue(t, ch, "q")
	if err := ch.QueueBind(q, "#", topo.Events, false, nil); err != nil {
		t.Fatal(err)
	}

	const secret = "whsec_assembled_service_01"
	name := fmt.Sprintf("shop%d", time.Now().UnixNano()%1e9)
	if _, err := in.SourceAPI.CreateSource(auth.WithTenant(ctx, "acme"), &ingressv1.CreateSourceRequest{
		Source: &ingressv1.Source{Name: name, Provider: "stripe", Secrets: []string{secret}},
	}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_assembled","type":"invoice.paid"}`)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/"+name, bytes.NewReader(body))
	req.Header.Set("Stripe-Signature", "t="+ts+",v1="+hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %d, want 202", resp.StatusCode)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if d.RoutingKey != name+".invoice.paid" || !bytes.Equal(d.Body, body) {
				t.Fatalf("on the bus: %q %s", d.RoutingKey, d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the accepted webhook is not on the bus")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The same event again is a duplicate; a wrong signature is a
	// verification failure; both are counted for the source's tenant.
	for _, sig := range []string{req.Header.Get("Stripe-Signature"), "t=" + ts + ",v1=" + hex.EncodeToString(make([]byte, 32))} {
		again, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/"+name, bytes.NewReader(body))
		again.Header.Set("Stripe-Signature", sig)
		resp, err := http.DefaultClient.Do(again)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := in.Stats.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stats, err := in.SourceAPI.ListSourceStats(auth.WithTenant(ctx, "acme"), &ingressv1.ListSourceStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(stats.GetStats()) != 1 {
		t.Fatalf("stats %v, want one source", stats)
	}
	if st := stats.GetStats()[0]; st.GetSource() != name || st.GetReceivedCount() != 3 || st.GetAcceptedCount() != 1 ||
		st.GetDuplicateCount() != 1 || st.GetVerificationFailureCount() != 1 || st.GetOtherRejectedCount() != 0 {
		t.Errorf("stats %v, want 3 received: 1 accepted, 1 duplicate, 1 verification failure", st)
	}
	if other, err := in.SourceAPI.ListSourceStats(auth.WithTenant(ctx, "globex"), &ingressv1.ListSourceStatsRequest{}); err != nil || len(other.GetStats()) != 0 {
		t.Errorf("another tenant sees %v, %v", other, err)
	}

	resp, err = http.Get(srv.URL + "/webhooks/" + name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d, want 405", resp.StatusCode)
	}
}
