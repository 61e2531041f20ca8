// Against the live daemon OMG_HOST names (tests/e2e/test_clients.py starts one serving SmolLM2
// as OMG_TEST_MODEL, with the fake hub holding OMG_TEST_PULL_REPO); skipped without OMG_HOST.
package omg

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/ohmygpu/ohmygpu/clients/go/gen/ohmygpu/api/v1"
	eventsv1 "github.com/ohmygpu/ohmygpu/clients/go/gen/ohmygpu/events/v1"
	runv1 "github.com/ohmygpu/ohmygpu/clients/go/gen/ohmygpu/run/v1"
	runtimev1 "github.com/ohmygpu/ohmygpu/clients/go/gen/ohmygpu/runtime/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func live(t *testing.T) (*Client, context.Context) {
	t.Helper()
	if os.Getenv("OMG_HOST") == "" {
		t.Skip("OMG_HOST names no daemon")
	}
	c, err := Dial(FromEnv())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(func() { cancel(); c.Close() })
	return c, ctx
}

func model() string {
	if m := os.Getenv("OMG_TEST_MODEL"); m != "" {
		return m
	}
	return "smollm2"
}

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		in, ca, addr string
		tls          bool
	}{{"127.0.0.1:9", "", "127.0.0.1:9", false}, {"box", "", "box:11435", false},
		{"grpcs://box:1/", "", "box:1", true}, {"[::1]", "/ca.pem", "[::1]:11435", true}} {
		addr, secure, err := Target(tc.in, tc.ca)
		if err != nil || addr != tc.addr || secure != tc.tls {
			t.Errorf("Target(%q) = %q %v %v", tc.in, addr, secure, err)
		}
	}
	if _, _, err := Target("ftp://box", ""); err == nil {
		t.Error("ftp:// accepted")
	}
}

func TestListModels(t *testing.T) {
	c, ctx := live(t)
	r, err := c.Models.ListModels(ctx, &apiv1.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Models {
		if m.Name == model() && len(m.Artifacts) > 0 && m.Artifacts[0].Size > 0 {
			return
		}
	}
	t.Fatalf("%s not listed: %v", model(), r.Models)
}

func TestChatStream(t *testing.T) {
	c, ctx := live(t)
	maxTokens, temperature := int32(12), float32(0)
	stream, err := c.Chat.Chat(ctx, &runtimev1.ChatRequest{
		Model:    model(),
		Messages: []*runtimev1.ChatMessage{{Role: "user", Content: "Count from one to five."}},
		Params:   &runv1.SamplingParams{MaxTokens: &maxTokens, Temperature: &temperature},
	})
	if err != nil {
		t.Fatal(err)
	}
	var deltas []string
	var finish runtimev1.FinishReason
	var completion uint32
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, r.Content)
		if r.FinishReason != 0 {
			finish = r.FinishReason
		}
		if r.Usage != nil {
			completion = r.Usage.CompletionTokens
		}
	}
	if len(deltas) < 3 || strings.TrimSpace(strings.Join(deltas, "")) == "" {
		t.Fatalf("deltas %q", deltas)
	}
	if finish == 0 || completion == 0 || completion > 12 {
		t.Fatalf("finish %v, %d tokens", finish, completion)
	}
}

func TestPullProgressAndEvents(t *testing.T) {
	c, ctx := live(t)
	repo := os.Getenv("OMG_TEST_PULL_REPO")
	if repo == "" {
		t.Skip("OMG_TEST_PULL_REPO names no repository on the daemon's hub")
	}
	job, err := c.Models.InstallModel(ctx, &apiv1.InstallModelRequest{Source: repo, Name: "go-pulled"})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := c.Jobs.WatchJob(ctx, &apiv1.WatchJobRequest{Id: job.Id})
	if err != nil {
		t.Fatal(err)
	}
	last := job
	for {
		j, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = j
	}
	if last.State != apiv1.JobState_JOB_STATE_DONE || last.TotalBytes == 0 || last.CompletedBytes != last.TotalBytes {
		t.Fatalf("job ended %v %d/%d: %s", last.State, last.CompletedBytes, last.TotalBytes, last.Error)
	}
	if _, err := c.Models.GetModel(ctx, &apiv1.GetModelRequest{Name: "go-pulled"}); err != nil {
		t.Fatal(err)
	}
	// The history holds the pull's download events: read one, then hang up.
	ectx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	events, err := c.Events.StreamEvents(ectx, &apiv1.StreamEventsRequest{
		Kinds: []eventsv1.EventKind{eventsv1.EventKind_EVENT_KIND_DOWNLOAD}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != eventsv1.EventKind_EVENT_KIND_DOWNLOAD || e.Id == 0 || e.Time == nil {
		t.Fatalf("event %v", e)
	}
}

func TestUnknownModelIsNotFound(t *testing.T) {
	c, ctx := live(t)
	_, err := c.Models.GetModel(ctx, &apiv1.GetModelRequest{Name: "no-such-model"})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "no-such-model") {
		t.Fatalf("GetModel: %v", err)
	}
	stream, err := c.Chat.Chat(ctx, &runtimev1.ChatRequest{Model: "no-such-model",
		Messages: []*runtimev1.ChatMessage{{Role: "user", Content: "hi"}}})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Chat: %v", err)
	}
}
