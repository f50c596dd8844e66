package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// metrics are the daemon's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec   // model, endpoint, status
	tokens   *prometheus.CounterVec   // model, kind
	ttft     *prometheus.HistogramVec // model
	itl      *prometheus.HistogramVec // model
	duration *prometheus.HistogramVec // model, endpoint
	queue    *prometheus.HistogramVec // model
	handler  fasthttp.RequestHandler
}

var latencyBuckets = []float64{.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10, 30}

func newMetrics(models *Registry) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_requests_total", Help: "API requests by model, endpoint and HTTP status.",
	}, []string{"model", "endpoint", "status"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_tokens_total", Help: "Tokens processed, by model and kind (prompt or completion).",
	}, []string{"model", "kind"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_time_to_first_token_seconds", Help: "Time from a request's arrival to its first token.", Buckets: latencyBuckets,
	}, []string{"model"})
	m.itl = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_inter_token_latency_seconds", Help: "Time between successive streamed pieces of text.", Buckets: latencyBuckets,
	}, []string{"model"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_request_duration_seconds", Help: "Time from a generation request's arrival to its end.", Buckets: latencyBuckets,
	}, []string{"model", "endpoint"})
	m.queue = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "octet_queue_wait_seconds", Help: "Time a request waited in the queue.", Buckets: latencyBuckets,
	}, []string{"model"})
	m.reg.MustRegister(m.requests, m.tokens, m.ttft, m.itl, m.duration, m.queue,
		engineCollector{models},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// engineCollector reads the live models' engines at scrape time.
type engineCollector struct{ models *Registry }

var (
	descQueued  = prometheus.NewDesc("octet_queue_waiting", "Requests waiting in the model's queue.", []string{"model"}, nil)
	descRunning = prometheus.NewDesc("octet_queue_running", "Sequences the model's engine is running.", []string{"model"}, nil)
	descKV      = prometheus.NewDesc("octet_kv_cache_usage_ratio", "Fraction of the model's KV-cache blocks in use.", []string{"model"}, nil)
	descLoad    = prometheus.NewDesc("octet_model_load_seconds", "Time the model took to load.", []string{"model"}, nil)
	descLoaded  = prometheus.NewDesc("octet_models_loaded", "Models being served.", nil, nil)
)

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descRunning, descKV, descLoad, descLoaded} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	n := 0
	c.models.Each(func(l *Loaded) {
		n++
		s := l.Engine.Stats()
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(s.Queued), l.Name)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(s.Running), l.Name)
		kv := 0.0
		if s.KVBlocks > 0 {
			kv = float64(s.KVUsedBlocks) / float64(s.KVBlocks)
		}
		ch <- prometheus.MustNewConstMetric(descKV, prometheus.GaugeValue, kv, l.Name)
		ch <- prometheus.MustNewConstMetric(descLoad, prometheus.GaugeValue, l.LoadTime.Seconds(), l.Name)
	})
	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(n))
}
