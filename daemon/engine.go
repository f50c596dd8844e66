package daemon

import (
	"encoding/hex"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/configs"
	"github.com/octet-dev/octet/model"
	"github.com/octet-dev/octet/scheduler"
)

// EngineTuning is the part of tuning.toml a running engine takes live
// (scheduler.Tunable); kv_block_size and kv_cache_mb size the runner and
// apply when a model loads.
func EngineTuning(t configs.Tuning) scheduler.Tuning {
	return scheduler.Tuning{
		MaxBatchTokens: t.MaxBatchTokens, MaxRunning: t.MaxRunning, PrefillChunk: t.PrefillChunk,
		QueueLength: t.QueueLength, Policy: scheduler.Policy(t.Policy), PrefixCache: t.PrefixCache,
		PriorityAging: t.PriorityAging.D(), MaxRunningPerKey: t.MaxRunningPerKey, MaxQueuedPerKey: t.MaxQueuedPerKey,
	}
}

// kvBlocks is the number of KV blocks a model gets: kv_cache_mb of memory
// at 32-bit keys and values (what the cpu and ref backends store), or, when
// it is 0, enough for max_running sequences of ctxLen positions. Never less
// than one sequence of ctxLen.
func kvBlocks(m *model.Model, t configs.Tuning, ctxLen int) int {
	c := m.Config
	perPos := 0 // bytes of keys and values of one position, all layers
	for l := range c.Layers {
		kv := c.KVHeads
		if l < len(c.LayerKVHeads) {
			kv = c.LayerKVHeads[l]
		}
		perPos += 2 * kv * c.HeadDim * 4
	}
	bs := max(t.KVBlockSize, 1)
	one := (ctxLen + bs - 1) / bs
	if t.KVCacheMB <= 0 || perPos == 0 {
		return one * max(t.MaxRunning, 1)
	}
	return max(one, t.KVCacheMB<<20/(perPos*bs))
}

// clientKey names the client of a request for fair share and per-key
// limits: a prefix of the hash of its bearer key ("" without one, as on
// the Unix socket).
func clientKey(ctx *fasthttp.RequestCtx) string {
	key, ok := strings.CutPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
	if !ok || key == "" {
		return ""
	}
	h := configs.HashKey(key)
	return hex.EncodeToString(h[:8])
}
