package daemon

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/octet-dev/octet/scheduler"
)

// metrics are the daemon's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec   // model, endpoint, status
	errors   *prometheus.CounterVec   // model, endpoint, code
	tokens   *prometheus.CounterVec   // model, kind
	ttft     *prometheus.HistogramVec // model
	itl      *prometheus.HistogramVec // model
	duration *prometheus.HistogramVec // model, endpoint
	queue    *prometheus.HistogramVec // model
	build    *prometheus.GaugeVec     // version, goversion, backend
	// connections over limits.max_connections, answered 503 or closed
	rejectedConns prometheus.Counter
	handler       fasthttp.RequestHandler
}

// forget drops the series of a model that is no longer served.
func (m *metrics) forget(model string) {
	l := prometheus.Labels{"model": model}
	m.requests.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.tokens.DeletePartialMatch(l)
	m.ttft.DeletePartialMatch(l)
	m.itl.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.queue.DeletePartialMatch(l)
}

// latencyBuckets are for the time between pieces of text: from a GPU's
// millisecond to a loaded CPU's second.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10, 30}

// durationBuckets are latencyBuckets, then up to limits.request_timeout's
// default (10 minutes): whole answers take minutes, and so may a wait in a
// long queue or a first token behind it.
var durationBuckets = append(slices.Clone(latencyBuckets), 60, 120, 300, 600)

func newMetrics(models *Registry) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_requests_total", Help: "API requests by model, endpoint and HTTP status.",
	}, []string{"model", "endpoint", "status"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_request_errors_total", Help: "API requests answered with an error, by model, endpoint and the error's code (queue_full, invalid_api_key, …).",
	}, []string{"model", "endpoint", "code"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_tokens_total", Help: "Tokens processed, by model and kind (prompt or completion).",
	}, []string{"model", "kind"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_time_to_first_token_seconds", Help: "Time from a request's arrival to its first token.", Buckets: durationBuckets,
	}, []string{"model"})
	m.itl = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_inter_token_latency_seconds", Buckets: latencyBuckets,
		Help: "Time between successive pieces of a generation's text, streamed or not: a token each, or more where a stop string or an unfinished character held text back.",
	}, []string{"model"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_request_duration_seconds", Help: "Time from a generation request's arrival to its end.", Buckets: durationBuckets,
	}, []string{"model", "endpoint"})
	m.queue = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_queue_wait_seconds", Help: "Time a request waited in the queue.", Buckets: durationBuckets,
	}, []string{"model"})
	m.build = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "octet_build_info", Help: "The running octet: its version, Go version and backend (value 1).",
	}, []string{"version", "goversion", "backend"})
	m.rejectedConns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "octet_connections_rejected_total", Help: "TCP connections beyond limits.max_connections, answered 503 too_many_connections (or closed when too many wait for that answer).",
	})
	m.reg.MustRegister(m.requests, m.errors, m.tokens, m.ttft, m.itl, m.duration, m.queue, m.build, m.rejectedConns,
		engineCollector{models},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// engineCollector reads the models' engines at scrape time.
type engineCollector struct{ models *Registry }

var (
	descQueued  = prometheus.NewDesc("octet_queue_waiting", "Requests waiting in the model's queue.", []string{"model"}, nil)
	descRunning = prometheus.NewDesc("octet_queue_running", "Sequences the model's engine is running.", []string{"model"}, nil)
	descKV      = prometheus.NewDesc("octet_kv_cache_usage_ratio", "Fraction of the model's KV-cache blocks in use.", []string{"model"}, nil)
	descLoad    = prometheus.NewDesc("octet_model_load_seconds", "Time the model took to load.", []string{"model"}, nil)
	descLive    = prometheus.NewDesc("octet_model_loaded_timestamp_seconds", "When the model's version being served went live (Unix time).", []string{"model"}, nil)
	descLoaded  = prometheus.NewDesc("octet_models_loaded", "Models being served.", nil, nil)

	// The scheduler's own figures (vLLM's names where one fits).
	descPreempt   = prometheus.NewDesc("octet_num_preemptions_total", "Sequences preempted out of the KV cache, to be recomputed.", []string{"model"}, nil)
	descPrefixQ   = prometheus.NewDesc("octet_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", []string{"model"}, nil)
	descPrefixHit = prometheus.NewDesc("octet_prefix_cache_hits_total", "Prompt tokens found in the prefix cache (not computed again).", []string{"model"}, nil)
	descCached    = prometheus.NewDesc("octet_prefix_cache_blocks", "KV blocks held in the prefix cache.", []string{"model"}, nil)
	descDeadline  = prometheus.NewDesc("octet_queue_deadline_exceeded_total", "Requests that left the queue at their queue deadline.", []string{"model"}, nil)
	descDrain     = prometheus.NewDesc("octet_queue_drain_rate", "Measured rate at which requests finish, per second of time the scheduler had work (behind Retry-After).", []string{"model"}, nil)
	descStepTok   = prometheus.NewDesc("octet_iteration_tokens", "Tokens per forward step (prefill and decode together).", []string{"model"}, nil)
	descStepSeqs  = prometheus.NewDesc("octet_iteration_sequences", "Sequences per forward step (the batch size).", []string{"model"}, nil)
	descStepTime  = prometheus.NewDesc("octet_step_duration_seconds", "Time of one forward step.", []string{"model"}, nil)
)

// constHistogram turns an engine's histogram into Prometheus's form.
func constHistogram(d *prometheus.Desc, h scheduler.Histogram, model string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, b := range h.Bounds {
		n += h.Counts[i]
		buckets[b] = n
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets, model)
}

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descRunning, descKV, descLoad, descLive, descLoaded,
		descPreempt, descPrefixQ, descPrefixHit, descCached, descDeadline, descDrain, descStepTok, descStepSeqs, descStepTime} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	n := 0
	// The counters are the name's, over its versions: a reload does not
	// reset them.
	c.models.EachTotal(func(l *Loaded, past scheduler.EngineStats) {
		n++
		s := l.Engine.Stats().PlusCounters(past)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(s.Queued), l.Name)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(s.Running), l.Name)
		kv := 0.0
		if s.KVBlocks > 0 {
			kv = float64(s.KVUsedBlocks) / float64(s.KVBlocks)
		}
		ch <- prometheus.MustNewConstMetric(descKV, prometheus.GaugeValue, kv, l.Name)
		ch <- prometheus.MustNewConstMetric(descLoad, prometheus.GaugeValue, l.LoadTime.Seconds(), l.Name)
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(l.LoadedAt.UnixNano())/1e9, l.Name)
		ch <- prometheus.MustNewConstMetric(descPreempt, prometheus.CounterValue, float64(s.Preemptions), l.Name)
		ch <- prometheus.MustNewConstMetric(descPrefixQ, prometheus.CounterValue, float64(s.PrefixQueryTokens), l.Name)
		ch <- prometheus.MustNewConstMetric(descPrefixHit, prometheus.CounterValue, float64(s.PrefixHitTokens), l.Name)
		ch <- prometheus.MustNewConstMetric(descCached, prometheus.GaugeValue, float64(s.KVCachedBlocks), l.Name)
		ch <- prometheus.MustNewConstMetric(descDeadline, prometheus.CounterValue, float64(s.Deadlines), l.Name)
		ch <- prometheus.MustNewConstMetric(descDrain, prometheus.GaugeValue, s.DrainRate, l.Name)
		if s.StepTokens.Counts != nil { // a batching engine
			ch <- constHistogram(descStepTok, s.StepTokens, l.Name)
			ch <- constHistogram(descStepSeqs, s.StepSeqs, l.Name)
			ch <- constHistogram(descStepTime, s.StepTime, l.Name)
		}
	})
	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(n))
}
