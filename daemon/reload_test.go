package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/eval"
	"github.com/octet-dev/octet/model/gguf"
	"github.com/octet-dev/octet/systemd/systemdtest"
)

// baseModel returns the bytes of the model the reload tests start from:
// stories260K (Q8_0) from ../shared where present, else synth's tiny shape.
func baseModel(t *testing.T) []byte {
	t.Helper()
	dir, name := modelsDir(t)
	b, err := os.ReadFile(filepath.Join(dir, name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// variant rewrites a GGUF file with the metadata key octet.test.version set
// to v (same size, other bytes, same weights: it passes any gate). With
// damage, output_norm is scaled up 50×, which makes every next-token
// distribution nearly one-hot: a model the default gate refuses, whether
// it is stories260K or synth's tiny shape (random weights, whose
// distributions are nearly flat already: scaled down 50× instead, it
// passed the gate with a mean KL divergence of 0.012).
func variant(t *testing.T, src []byte, v uint32, damage bool) []byte {
	t.Helper()
	f, err := gguf.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter()
	w.Alignment = f.Alignment
	for _, kv := range f.KV {
		w.Set(kv.Key, kv.Value)
	}
	w.Set("octet.test.version", gguf.Uint32(v))
	for i := range f.Tensors {
		ti := &f.Tensors[i]
		data := bytes.Clone(f.TensorData(ti))
		if damage && ti.Name == "output_norm.weight" {
			if ti.Type != gguf.F32 {
				t.Fatalf("output_norm is %s, not F32", ti.Type)
			}
			for j := 0; j+4 <= len(data); j += 4 {
				x := math.Float32frombits(binary.LittleEndian.Uint32(data[j:]))
				binary.LittleEndian.PutUint32(data[j:], math.Float32bits(x*50))
			}
		}
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, data); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// How a test puts a new version of a file in place.
const (
	byRename   = iota // write a hidden file beside it, then rename over it
	byInPlace         // overwrite it in place, slowly (as rsync --inplace)
	byTruncate        // truncate it, wait, then write it again slowly
)

func writeModel(t *testing.T, path string, b []byte, how int) {
	t.Helper()
	slow := func(f *os.File) {
		for off := 0; off < len(b); off += 32 << 10 {
			if _, err := f.Write(b[off:min(off+32<<10, len(b))]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	switch how {
	case byRename:
		tmp := filepath.Join(filepath.Dir(path), ".incoming-"+filepath.Base(path))
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	case byInPlace:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		slow(f)
		f.Truncate(int64(len(b)))
		f.Close()
	case byTruncate:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		slow(f)
		f.Close()
	}
}

// answer is how one client request went.
type answer struct {
	start, end time.Time
	sha        string
	status     int
	problem    string // "" for a whole answer
	chunks     int
}

// streamOnce sends one streaming completion and checks that it is whole:
// status 200, text chunks, a finishing chunk, then [DONE], no error event.
func streamOnce(c *http.Client, url, model string) (a answer) {
	a.start = time.Now()
	defer func() { a.end = time.Now() }()
	body := `{"model":"` + model + `","prompt":"Once upon a time","max_tokens":24,"temperature":0,"ignore_eos":true,"stream":true}`
	resp, err := c.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		a.problem = err.Error()
		return a
	}
	defer resp.Body.Close()
	a.status, a.sha = resp.StatusCode, resp.Header.Get("X-Octet-Model-Sha256")
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.problem = "reading: " + err.Error()
		return a
	}
	if a.status != 200 {
		a.problem = fmt.Sprintf("status %d: %s", a.status, b)
		return a
	}
	ev := sse(b)
	a.chunks = len(ev)
	switch {
	case len(ev) < 3 || ev[len(ev)-1] != "[DONE]":
		a.problem = fmt.Sprintf("truncated stream: %q", ev)
	case strings.Contains(string(b), `"error"`):
		a.problem = fmt.Sprintf("error event: %q", ev)
	case !strings.Contains(ev[len(ev)-2], `"finish_reason":"length"`):
		a.problem = fmt.Sprintf("no finishing chunk: %q", ev)
	}
	return a
}

// liveModels reads /v1/models.
func liveModels(t *testing.T, c *http.Client, url string) map[string]modelInfo {
	t.Helper()
	resp, err := c.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Data []modelInfo }
	b, _ := io.ReadAll(resp.Body)
	decodeJSON(t, b, &list)
	out := map[string]modelInfo{}
	for _, m := range list.Data {
		out[m.ID] = m
	}
	return out
}

// waitModel polls /v1/models until name is live with sha ("" : until name
// is gone) and returns when it saw it.
func waitModel(t *testing.T, c *http.Client, url, name, sha string) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, ok := liveModels(t, c, url)[name]
		if (sha == "" && !ok) || (ok && m.SHA256 == sha) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("model %s did not become %q within 30 s (live: %+v)", name, sha, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// version is one version of the model file and when it could be live: from
// when the test began writing it to when the test saw its successor live.
type version struct {
	sha              string
	written, retired time.Time
}

// TestHotReloadUnderLoad is the acceptance test of hot reload, on the real
// binary: while streaming clients run for the whole test, the model file is
// replaced 20 times (by rename, by a slow copy in place, by truncation and
// a slow rewrite), a corrupt and an incomplete file are added, a damaged
// replacement meets the quality gate, a second model comes with an alias
// from its sidecar and goes, tuning.toml and octet.toml are edited with
// good and broken content (a new KV cache type reloads the model), and
// SIGHUP and the admin call reload. No answer
// may fail or be cut short; each answer comes from a version that was live
// during it; after each good swap new requests get the new version; the
// broken inputs change nothing; every outcome shows in the log, the metrics
// and systemd's notifications.
func TestHotReloadUnderLoad(t *testing.T) {
	notify := systemdtest.Listen(t)
	base := baseModel(t)
	models, cfgDir := t.TempDir(), t.TempDir()
	path := filepath.Join(models, "m.gguf")
	v0 := variant(t, base, 0, false)
	if err := os.WriteFile(path, v0, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cfgDir, "octet.toml")
	os.WriteFile(cfg, []byte("[log]\nlevel = \"info\"\n"), 0o644)
	// The default backend: the cpu one where its libraries are built (under
	// this load it once died of SIGSEGV on a library thread, reading a
	// step's arrays from a goroutine stack that had moved).
	p := serve(t, nil, "--config", cfg, "--models", models)
	if os.Getenv("OCTET_NATIVE_REQUIRED") != "" { // make builds the libraries: the cpu backend must be the one under test
		p.log.wait(t, `msg="cpu backend loaded"`, 5*time.Second)
	}
	c := client("")
	systemdtest.Expect(t, notify, "READY=1", 5*time.Second)
	if got := liveModels(t, c, p.url)["m"]; got.SHA256 != hexSHA(v0) || got.LoadedAt == "" {
		t.Fatalf("/v1/models at the start: %+v, want sha256 %s", got, hexSHA(v0))
	}

	// The load: streaming clients for the whole test.
	const clients = 4
	var mu sync.Mutex
	var answers []answer
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				a := streamOnce(c, p.url, "m")
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	versions := []version{{sha: hexSHA(v0)}}
	swap := func(b []byte, how int) {
		t.Helper()
		v := version{sha: hexSHA(b), written: time.Now()}
		writeModel(t, path, b, how)
		at := waitModel(t, c, p.url, "m", v.sha)
		versions[len(versions)-1].retired = at
		versions = append(versions, v)
		if a := streamOnce(c, p.url, "m"); a.problem != "" || a.sha != v.sha {
			t.Errorf("a request after the swap to %s: sha %s, %s", v.sha, a.sha, a.problem)
		}
	}
	hows := []string{"rename", "in place", "truncate and rewrite"}
	for i := 1; i <= 20; i++ {
		swap(variant(t, base, uint32(i), false), i%3)
		systemdtest.Expect(t, notify, "RELOADING=1", 5*time.Second)
		systemdtest.Expect(t, notify, "READY=1", 5*time.Second)
		t.Logf("swap %d (%s) live", i, hows[i%3])
	}
	live := versions[len(versions)-1].sha
	p.log.wait(t, `msg="model replaced; running requests finish on the previous version" model=m sha256=`+live+` .*kind=model_replace result=ok`, time.Second)

	// Broken inputs change nothing, and say why.
	os.WriteFile(filepath.Join(models, "corrupt.gguf"), append([]byte("GGUF\x03\x00\x00\x00"), bytes.Repeat([]byte{0xff}, 4096)...), 0o644)
	os.WriteFile(filepath.Join(models, "partial.gguf"), v0[:len(v0)/2], 0o644)
	p.log.wait(t, `level=ERROR msg="model file is not a whole GGUF file.*model=corrupt .*kind=model_add result=failed`, 10*time.Second)
	p.log.wait(t, `level=ERROR msg="model file is not a whole GGUF file.*model=partial .*run past the end of the file`, 10*time.Second)
	damaged := variant(t, base, 99, true)
	writeModel(t, path, damaged, byRename)
	m := p.log.wait(t, `level=WARN msg="replacement refused by the quality gate; the live model stays" model=m sha256=`+hexSHA(damaged)+` .*reason="([^"]*)".* kind=model_replace result=refused`, 30*time.Second)
	t.Logf("gate: %s", m[1])
	systemdtest.Expect(t, notify, "STATUS=ready, 1 models: m; last reload: model_replace m refused", 5*time.Second)
	if got := liveModels(t, c, p.url); len(got) != 1 || got["m"].SHA256 != live {
		t.Errorf("after the broken inputs: %+v, want only m at %s", got, live)
	}
	// A good file after the refused one goes live.
	swap(variant(t, base, 21, false), byRename)
	live = versions[len(versions)-1].sha

	// A second model, with an alias from its sidecar, comes and goes.
	second := variant(t, base, 1000, false)
	os.WriteFile(filepath.Join(models, "second.toml"), []byte("aliases = [\"helper\", \"m\"]\n"), 0o644)
	writeModel(t, filepath.Join(models, "second.gguf"), second, byRename)
	waitModel(t, c, p.url, "second", hexSHA(second))
	if a := streamOnce(c, p.url, "helper"); a.problem != "" || a.sha != hexSHA(second) {
		t.Errorf("by alias: sha %s, %s", a.sha, a.problem)
	}
	p.log.wait(t, `msg="aliases taken by another model's name or alias are not served for this model" model=second aliases=m`, time.Second)
	if got := liveModels(t, c, p.url)["second"].Aliases; strings.Join(got, ",") != "helper,m" {
		t.Errorf("second's aliases: %q", got)
	}
	os.WriteFile(filepath.Join(models, "second.toml"), []byte("aliases = [\"helper2\"]\n"), 0o644)
	p.log.wait(t, `msg="model sidecar applied" model=second aliases=helper2 .*kind=sidecar result=ok`, 10*time.Second)
	os.WriteFile(filepath.Join(models, "second.toml"), []byte("aliases = [\"bad name\"]\n"), 0o644)
	p.log.wait(t, `msg="model sidecar not applied; the previous settings stay" model=second .*second.toml:1: aliases.* kind=sidecar result=failed`, 10*time.Second)
	if a := streamOnce(c, p.url, "helper2"); a.problem != "" || a.sha != hexSHA(second) {
		t.Errorf("by alias after a broken sidecar: sha %s, %s", a.sha, a.problem)
	}
	os.Remove(filepath.Join(models, "second.gguf"))
	waitModel(t, c, p.url, "second", "")
	p.log.wait(t, `msg="model removed: its file is gone; running requests finish on it" model=second .*kind=model_remove result=ok`, time.Second)
	if a := streamOnce(c, p.url, "helper2"); a.status != 404 {
		t.Errorf("the removed model's alias: %d %s", a.status, a.problem)
	}

	// tuning.toml: a good edit applies live, a broken one changes nothing.
	loaded := liveModels(t, c, p.url)["m"].LoadedAt
	os.WriteFile(filepath.Join(cfgDir, "tuning.toml"), []byte("# more room in the queue\nqueue_length = 200\n"), 0o644)
	p.log.wait(t, `msg="tuning applied" .*kind=tuning result=ok`, 10*time.Second)
	os.WriteFile(filepath.Join(cfgDir, "tuning.toml"), []byte("queue_length = 200\nmax_running = \"many\"\n"), 0o644)
	p.log.wait(t, `level=ERROR msg="config reload failed; keeping the running config" err=".*tuning.toml:2: max_running.* kind=config result=failed`, 10*time.Second)
	os.WriteFile(filepath.Join(cfgDir, "tuning.toml"), []byte("queue_length = 200 # a comment changes nothing\n"), 0o644)
	p.log.wait(t, `msg="config unchanged"`, 10*time.Second)
	if got := liveModels(t, c, p.url)["m"]; got.SHA256 != live {
		t.Errorf("after the tuning edits: %+v (loaded before: %s)", got, loaded)
	}
	// A new KV cache type reloads the model with it, from the same bytes:
	// the one kv_type = "auto" did not pick (f16 on cpu, f32 on ref).
	auto := p.log.wait(t, `msg="model loaded" model=m .*kv_type=(\w+)`, time.Second)[1]
	other := map[string]string{"f16": "f32", "f32": "f16"}[auto]
	os.WriteFile(filepath.Join(cfgDir, "tuning.toml"), []byte("queue_length = 200\nkv_type = \""+other+"\"\n"), 0o644)
	p.log.wait(t, `msg="tuning applied" .*models_reloaded=1 .*KVType:`+other+`.* kind=tuning result=ok`, 30*time.Second)
	if got := liveModels(t, c, p.url)["m"]; got.SHA256 != live || got.LoadedAt == loaded {
		t.Errorf("after kv_type = %q: %+v (loaded before: %s)", other, got, loaded)
	}
	if a := streamOnce(c, p.url, "m"); a.problem != "" {
		t.Errorf("with an %s KV cache: %s", other, a.problem)
	}
	// octet.toml: live settings apply, listener-like ones are reported.
	os.WriteFile(cfg, []byte("[log]\nlevel = \"info\"\n[limits]\nmax_tokens = 300\nmax_connections = 77\n"), 0o644)
	p.log.wait(t, `level=WARN msg="these settings changed but apply only after a restart; the running values stay" settings="limits \(connection settings\)"`, 10*time.Second)
	p.log.wait(t, `msg="config reloaded" .*kind=config result=ok`, 10*time.Second)
	if a := streamOnce(c, p.url, "m"); a.problem != "" {
		t.Error(a.problem)
	}
	// SIGHUP and the admin call run the same reload.
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.log.wait(t, `msg="reload requested" by=SIGHUP`, 10*time.Second)
	if code, body := curl(t, "-X", "POST", "--unix-socket", p.sock, "http://localhost/admin/reload"); code != 200 {
		t.Errorf("admin reload: %d %s", code, body)
	}

	stop()
	wg.Wait()
	// Every answer whole, and from a version live during it.
	failed, swapsSeen := 0, map[string]bool{}
	for _, a := range answers {
		if a.problem != "" {
			failed++
			if failed <= 5 {
				t.Errorf("answer %s…%s: %s", a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"), a.problem)
			}
			continue
		}
		ok := false
		for _, v := range versions {
			if v.sha == a.sha && !a.end.Before(v.written) && (v.retired.IsZero() || !a.start.After(v.retired)) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("answer %s…%s came from %q, not a version live then", a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"), a.sha)
		}
		swapsSeen[a.sha] = true
	}
	t.Logf("%d answers under load, %d failed or cut short, from %d of the %d versions", len(answers), failed, len(swapsSeen), len(versions))
	if len(answers) < 50 {
		t.Errorf("only %d answers: the load did not run through the test", len(answers))
	}

	// The metrics count every outcome and describe the live model.
	_, body := curl(t, p.url+"/metrics")
	for _, want := range []string{
		`octet_reload_total{kind="model_replace",result="ok"} 21`,
		`octet_reload_total{kind="model_replace",result="refused"} 1`,
		// corrupt and partial, once on arrival and once more for each of
		// SIGHUP and the admin call, which retry what failed.
		`octet_reload_total{kind="model_add",result="failed"} 6`,
		`octet_reload_total{kind="model_add",result="ok"} 2`,
		`octet_reload_total{kind="model_remove",result="ok"} 1`,
		`octet_reload_total{kind="tuning",result="ok"} 2`,
		`octet_reload_total{kind="sidecar",result="failed"} 1`,
		`octet_model_info{aliases="",kv_type="`, `name="m",path="` + path + `",sha256="` + live + `"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^octet_model_info`).FindAll(body, -1)); n != 1 {
		t.Errorf("%d octet_model_info series, want 1", n)
	}
	p.stop(t)
}

// TestSidecarDefaultGateIsEvals: a model without a sidecar gets eval's
// default gate.
func TestSidecarDefaultGateIsEvals(t *testing.T) {
	if g := gateOf(configs.DefaultSidecar().Gate); g != eval.DefaultGate {
		t.Errorf("default sidecar gate %+v, eval's %+v", g, eval.DefaultGate)
	}
}

// TestSnapshotSurvivesTruncation: a model runs on its own copy of the file,
// so truncating and rewriting the file under a live model changes nothing
// it reads; the hash is the bytes read.
func TestSnapshotSurvivesTruncation(t *testing.T) {
	b := baseModel(t)
	path := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(path, b, 0o644)
	s, err := readSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.free()
	m, err := s.model(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if s.sha256 != hexSHA(b) {
		t.Fatalf("snapshot sha %s, want %s", s.sha256, hexSHA(b))
	}
	f, _ := gguf.Parse(b)
	ti, _ := f.Tensor("token_embd.weight")
	// Reads every byte: a mapping of the truncated file would fault.
	if !bytes.Equal(m.TokEmbd.Data, f.TensorData(ti)) {
		t.Error("the snapshot's embedding differs from the file's")
	}
	if err := complete(path); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty file: %v", err)
	}
	for _, cut := range []int{len(b) - 100, 200, 20} { // in the tensors, the metadata, the header
		os.WriteFile(path, b[:cut], 0o644)
		if err := complete(path); err == nil || !endsTooSoon(err) {
			t.Errorf("a file cut at %d: %v (ends too soon: %v)", cut, err, endsTooSoon(err))
		}
	}
	os.WriteFile(path, append(bytes.Clone(b), make([]byte, 4096)...), 0o644)
	if err := complete(path); err == nil || !strings.Contains(err.Error(), "bytes follow them") || endsTooSoon(err) {
		t.Errorf("a file with bytes after its tensors: %v", err)
	}
	w := gguf.NewWriter()
	w.Set("general.architecture", gguf.String("llama"))
	var vocabOnly bytes.Buffer
	w.WriteTo(&vocabOnly)
	os.WriteFile(path, vocabOnly.Bytes(), 0o644)
	if err := complete(path); err == nil || !strings.Contains(err.Error(), "no tensors") || endsTooSoon(err) {
		t.Errorf("a file with no tensors: %v", err)
	}
}

// TestSwapWaitsForRunningRequests (in process, for the race detector): a
// request held inside a forward step keeps the old version alive across a
// swap and a removal of its file; it finishes normally on it, and the old
// version is unloaded only then.
func TestSwapWaitsForRunningRequests(t *testing.T) {
	d := runInProcess(t, nil)
	closeGate()
	name := d.model()
	old := regexpFind(d.log.String(), `msg="model loaded" model=\S+ sha256=(\w+)`)
	c, r := streamReq(t, d.addr, name) // held in its first step
	defer c.Close()
	dir := filepath.Dir(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	next := variant(t, baseModel(t), 7, false)
	writeModel(t, filepath.Join(dir, name+".gguf"), next, byRename)
	d.log.wait(t, `msg="model replaced; running requests finish on the previous version" model=`+name+` sha256=`+hexSHA(next), 30*time.Second)
	if strings.Contains(d.log.String(), `msg="model unloaded" model=`+name+` sha256=`+old) {
		t.Fatal("the old version was unloaded while a request ran on it")
	}
	os.Remove(filepath.Join(dir, name+".gguf"))
	d.log.wait(t, `msg="model removed: its file is gone; running requests finish on it" model=`+name, 10*time.Second)
	openGate()
	if ev := rest(t, r); !strings.Contains(ev[len(ev)-2], `"finish_reason":"length"`) {
		t.Errorf("the held stream: %q", ev)
	}
	d.log.wait(t, `msg="model unloaded" model=`+name+` sha256=`+old, 10*time.Second)
	d.log.wait(t, `msg="model unloaded" model=`+name+` sha256=`+hexSHA(next), 10*time.Second)
	d.stop(t)
}

// TestCountersSurviveReload: the engine's counters on /metrics are the
// model name's over its versions: they do not fall when a new version goes
// live, while the old one finishes its requests, or when it is unloaded.
func TestCountersSurviveReload(t *testing.T) {
	d := runInProcess(t, nil)
	name := d.model()
	hc := client(d.sock)
	scrape := func() (queries, steps float64) {
		t.Helper()
		resp, err := hc.Get("http://octet/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		read := func(metric string) float64 {
			m := regexp.MustCompile(`(?m)^` + metric + `\{model="` + name + `"\} (\S+)$`).FindSubmatch(b)
			if m == nil {
				t.Fatalf("no %s for %s in\n%s", metric, name, b)
			}
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			return v
		}
		return read("octet_prefix_cache_queries_total"), read("octet_iteration_sequences_count")
	}
	for range 2 {
		if code, body := curl(t, "-d", chatReq(name, ""), "http://"+d.addr+"/v1/chat/completions"); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	q0, s0 := scrape()
	if q0 == 0 || s0 == 0 {
		t.Fatalf("after two requests: %v prompt tokens looked up, %v steps", q0, s0)
	}
	closeGate()
	old := regexpFind(d.log.String(), `msg="model loaded" model=\S+ sha256=(\w+)`)
	c, r := streamReq(t, d.addr, name) // held in its first step on the old version
	defer c.Close()
	dir := filepath.Dir(regexpFind(d.log.String(), `msg="model loaded" .*path=(\S+)`))
	writeModel(t, filepath.Join(dir, name+".gguf"), variant(t, baseModel(t), 7, false), byRename)
	d.log.wait(t, `msg="model replaced; running requests finish on the previous version" model=`+name, 30*time.Second)
	q1, s1 := scrape()
	if q1 < q0 || s1 < s0 {
		t.Errorf("with the old version retiring: %v, %v; before the reload %v, %v", q1, s1, q0, s0)
	}
	openGate()
	rest(t, r)
	d.log.wait(t, `msg="model unloaded" model=`+name+` sha256=`+old, 10*time.Second)
	q2, s2 := scrape()
	if q2 < q1 || s2 <= s1 {
		t.Errorf("with the old version unloaded: %v, %v; while it retired %v, %v", q2, s2, q1, s1)
	}
	if code, body := curl(t, "-d", chatReq(name, ""), "http://"+d.addr+"/v1/chat/completions"); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if q3, s3 := scrape(); q3 <= q2 || s3 <= s2 {
		t.Errorf("after a request on the new version: %v, %v; before %v, %v", q3, s3, q2, s2)
	}
	d.stop(t)
}

// TestRefusalOutlivesRestart: a replacement the quality gate refused is not
// served by the next start, which serves the version kept when it was
// refused; without that copy, nothing; a good replacement then goes live
// and the record goes.
func TestRefusalOutlivesRestart(t *testing.T) {
	base := baseModel(t)
	models := t.TempDir()
	path := filepath.Join(models, "m.gguf")
	v0, damaged, good := variant(t, base, 0, false), variant(t, base, 99, true), variant(t, base, 5, false)
	if err := os.WriteFile(path, v0, 0o644); err != nil {
		t.Fatal(err)
	}
	c := client("")
	p := serve(t, nil, "--models", models)
	writeModel(t, path, damaged, byRename)
	p.log.wait(t, `msg="replacement refused by the quality gate; the live model stays" model=m sha256=`+hexSHA(damaged), 30*time.Second)
	p.stop(t)
	record, kept := refusalPaths(models, "m")
	if rf, err := readRefusal(models, "m"); err != nil || rf == nil || rf.SHA256 != hexSHA(damaged) || rf.KeptSHA256 != hexSHA(v0) {
		t.Fatalf("record %+v, %v", rf, err)
	}

	p = serve(t, nil, "--models", models)
	p.log.wait(t, `level=WARN msg="model file was refused by the quality gate before this start; serving the version kept then" model=m sha256=`+hexSHA(damaged)+`.* served_sha256=`+hexSHA(v0), time.Second)
	if got := liveModels(t, c, p.url)["m"]; got.SHA256 != hexSHA(v0) {
		t.Errorf("after a restart: %+v, want the kept %s", got, hexSHA(v0))
	}
	p.stop(t)

	os.Remove(kept)
	p = serve(t, nil, "--models", models)
	p.log.wait(t, `msg="model file was refused by the quality gate before this start, and the version served then is not at hand; not served" model=m`, time.Second)
	if _, ok := liveModels(t, c, p.url)["m"]; ok {
		t.Error("the refused file is served")
	}
	writeModel(t, path, good, byRename)
	waitModel(t, c, p.url, "m", hexSHA(good))
	if _, err := os.Stat(record); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the record stays after a good version went live: %v", err)
	}
	p.stop(t)
}
