package daemon

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octet-dev/octet/configs"
)

// TestOverload drives ten times the configured capacity (running slots
// plus queue) for a bounded time, with a mix of plain, streaming and
// queue-deadline requests. Every request must end in a result or a 429
// (queue full or queue deadline, with Retry-After): never a 5xx, never a
// hang. The queue never grows past its bound, the server's memory settles
// back after the storm, and it serves normally afterwards.
func TestOverload(t *testing.T) {
	const running, queue = 2, 4
	d := runInProcess(t, func(c *configs.Config) {
		c.Tuning.MaxRunning = running
		c.Tuning.QueueLength = queue
	})
	name := d.model()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	hc := &http.Client{Timeout: 60 * time.Second}
	clients := 10 * (running + queue)
	storm := time.Now().Add(3 * time.Second)
	var mu sync.Mutex
	statuses := map[string]int{}
	var bad []string
	maxQueued := 0
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for n := 0; time.Now().Before(storm); n++ {
				extra := ""
				switch (i + n) % 3 {
				case 1:
					extra += `,"stream":true`
				case 2:
					extra += `,"queue_deadline_ms":50`
				}
				resp, err := hc.Post("http://"+d.addr+"/v1/chat/completions", "application/json", strings.NewReader(chatReq(name, extra)))
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				outcome := strconv.Itoa(resp.StatusCode)
				switch {
				case err != nil:
					outcome = "read: " + err.Error()
				case resp.StatusCode == 429:
					var e struct{ Error struct{ Code string } }
					json.Unmarshal(body, &e)
					outcome += " " + e.Error.Code
					if resp.Header.Get("Retry-After") == "" {
						outcome += " without Retry-After"
					}
				case resp.StatusCode == 200 && strings.Contains(string(body), `"error"`):
					// A stream that ended in an error event: its code is the outcome.
					var e struct{ Error struct{ Code string } }
					for _, ev := range sse(body) {
						if json.Unmarshal([]byte(ev), &e) == nil && e.Error.Code != "" {
							outcome += " stream " + e.Error.Code
						}
					}
				}
				mu.Lock()
				statuses[outcome]++
				mu.Unlock()
			}
		})
	}
	hs := client(d.sock)
	for time.Now().Before(storm) {
		resp, err := hs.Get("http://octet/admin/status")
		if err == nil {
			var st struct{ Engines []struct{ Queued int } }
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			for _, e := range st.Engines {
				maxQueued = max(maxQueued, e.Queued)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("requests still hanging a minute after the storm")
	}
	t.Logf("%d clients for 3 s: outcomes %v; queue at most %d", clients, statuses, maxQueued)
	if len(bad) > 0 {
		t.Errorf("transport errors: %q", bad)
	}
	ok, full := 0, 0
	for outcome, n := range statuses {
		switch outcome {
		case "200":
			ok += n
		case "429 queue_full", "429 queue_deadline": // a stream too: refused before it starts
			full += n
		default:
			t.Errorf("%d requests ended %q", n, outcome)
		}
	}
	if ok == 0 || full == 0 {
		t.Errorf("%d answered, %d refused: the storm did not overload the server, or nothing got through", ok, full)
	}
	// Waiting: at most the queue, plus those the free slots take at the
	// next step.
	if maxQueued > queue+running {
		t.Errorf("queue grew to %d past its bound of %d", maxQueued, queue+running)
	}

	// After the storm: memory back near where it was, and normal service.
	hc.CloseIdleConnections()
	var after runtime.MemStats
	for range 20 {
		runtime.GC()
		runtime.ReadMemStats(&after)
		if after.HeapAlloc < before.HeapAlloc+64<<20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after.HeapAlloc >= before.HeapAlloc+64<<20 {
		t.Errorf("heap grew from %d to %d bytes", before.HeapAlloc, after.HeapAlloc)
	}
	code, body := curl(t, "-d", chatReq(name, ""), "http://"+d.addr+"/v1/chat/completions")
	if code != 200 {
		t.Errorf("after the storm: %d %s", code, body)
	}
	resp, err := hs.Get("http://octet/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"octet_iteration_sequences_bucket", "octet_step_duration_seconds_count", "octet_prefix_cache_hits_total", "octet_num_preemptions_total"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}
