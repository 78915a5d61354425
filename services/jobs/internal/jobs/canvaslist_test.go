package jobs_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"google.golang.org/grpc/codes"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/jobstest"
)

// Chains and groups are listed per tenant, newest first, page by page
// (over REST too); one that has expired drops out of the list and its
// index.
func TestListChainsAndGroups(t *testing.T) {
	t.Parallel()
	e := jobstest.Start(t, jobstest.Options{})
	ctx := e.Acme.Ctx(context.Background())
	c := e.Replicas[0].Canvas
	// Tasks of a queue no worker takes: they stay pending.
	task := func() []*jobsv1.Task { return []*jobsv1.Task{{Name: "a", Queue: "idle"}, {Name: "b", Queue: "idle"}} }
	var chains []string
	for i := range 5 {
		id := fmt.Sprintf("chain-%d", i)
		if _, err := c.CreateChain(ctx, &jobsv1.CreateChainRequest{Chain: &jobsv1.Chain{Id: id, Tasks: task()}}); err != nil {
			t.Fatal(err)
		}
		chains = append([]string{id}, chains...) // newest first
	}
	for _, id := range []string{"group-1", "chord-1"} {
		g := &jobsv1.Group{Id: id, Tasks: task()}
		if id == "chord-1" {
			g.Callback = &jobsv1.Task{Name: "c", Queue: "idle"}
		}
		if _, err := c.CreateGroup(ctx, &jobsv1.CreateGroupRequest{Group: g}); err != nil {
			t.Fatal(err)
		}
	}

	// Pages of two over gRPC: every chain once, newest first.
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		res, err := c.ListChains(ctx, &jobsv1.ListChainsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range res.GetChains() {
			if len(ch.GetTasks()) != 2 || ch.GetState() != "running" {
				t.Errorf("chain %v", ch)
			}
			got = append(got, ch.GetId())
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pages do not end")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(chains) {
		t.Errorf("chains %v, want %v", got, chains)
	}

	// Groups over REST; the chord with its callback.
	code, res := e.REST(t, e.Acme, "GET", "/v1/groups", "")
	if code != 200 {
		t.Fatalf("GET /v1/groups: %d %v", code, res)
	}
	groups, _ := res["groups"].([]any)
	if len(groups) != 2 {
		t.Fatalf("groups %v", res)
	}
	if g := groups[0].(map[string]any); g["id"] != "chord-1" || g["callback"] == nil {
		t.Errorf("first group %v, want chord-1 with its callback", g)
	}
	code, res = e.REST(t, e.Acme, "GET", "/v1/chains?pageSize=3", "")
	if cs, _ := res["chains"].([]any); code != 200 || len(cs) != 3 || res["nextPageToken"] == "" {
		t.Errorf("GET /v1/chains?pageSize=3: %d %v", code, res)
	}
	code, res = e.REST(t, e.Acme, "GET", "/v1/chains?pageToken="+url.QueryEscape("nope"), "")
	if code != 400 {
		t.Errorf("a bad page token: %d %v", code, res)
	}

	// Another tenant sees none of them.
	other := e.Other.Ctx(context.Background())
	if res, err := c.ListChains(other, &jobsv1.ListChainsRequest{}); err != nil || len(res.GetChains()) != 0 {
		t.Errorf("another tenant's chains: %v %v", res, err)
	}
	if res, err := c.ListGroups(other, &jobsv1.ListGroupsRequest{}); err != nil || len(res.GetGroups()) != 0 {
		t.Errorf("another tenant's groups: %v %v", res, err)
	}
	_, err := c.ListChains(ctx, &jobsv1.ListChainsRequest{PageSize: 101})
	wantCode(t, "page size 101", err, codes.InvalidArgument)

	// A chain whose record expired is left out and dropped from the index.
	st := e.Replicas[0].Jobs.Store
	if err := e.Redis.Del(context.Background(), st.Key("cv", e.Acme.Name, "chain-3")).Err(); err != nil {
		t.Fatal(err)
	}
	var all *jobsv1.ListChainsResponse
	all, err = c.ListChains(ctx, &jobsv1.ListChainsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetChains()) != 4 {
		t.Errorf("after an expiry: %d chains, want 4", len(all.GetChains()))
	}
	if n := e.Redis.ZCard(context.Background(), st.Key("cvs", "chain", e.Acme.Name)).Val(); n != 4 {
		t.Errorf("index holds %d chains after a list, want 4", n)
	}
}
