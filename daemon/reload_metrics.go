package daemon

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// reloadMetrics count the outcomes of reloads and describe the live models.
type reloadMetrics struct {
	// reloads by kind (model_add, model_replace, model_remove, config,
	// tuning, sidecar) and result (ok, failed, refused, unchanged).
	reloads *prometheus.CounterVec
}

func newReloadMetrics(reg *prometheus.Registry, models *Registry) *reloadMetrics {
	m := &reloadMetrics{reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "octet_reload_total", Help: "Reloads of models and configuration, by kind and result.",
	}, []string{"kind", "result"})}
	reg.MustRegister(m.reloads, modelInfoCollector{models})
	return m
}

// modelInfoCollector reports one octet_model_info series per live model.
type modelInfoCollector struct{ models *Registry }

// (When it went live is octet_model_loaded_timestamp_seconds: a time in a
// label would make a series of every reload.)
var descModelInfo = prometheus.NewDesc("octet_model_info",
	"A live model: its name, the SHA-256 of its file, the file, its aliases and its KV cache's values (value 1).",
	[]string{"name", "sha256", "path", "aliases", "kv_type"}, nil)

func (c modelInfoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descModelInfo }

func (c modelInfoCollector) Collect(ch chan<- prometheus.Metric) {
	c.models.Each(func(l *Loaded) {
		ch <- prometheus.MustNewConstMetric(descModelInfo, prometheus.GaugeValue, 1,
			l.Name, l.SHA256, l.Path, strings.Join(c.models.Aliases(l.Name), ","), l.KV.String())
	})
}
