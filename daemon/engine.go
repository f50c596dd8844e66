package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/octet-dev/octet/backends"
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
// of keys and values of type kv, or, when it is 0, enough for max_running
// sequences of ctxLen positions. Never less than one sequence of ctxLen.
func kvBlocks(m *model.Model, t configs.Tuning, kv backends.KVType, ctxLen int) int {
	perPos := int(backends.KVBytesPerPosition(m, kv))
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
	_, sum, ok := bearer(ctx)
	if !ok {
		return ""
	}
	return hex.EncodeToString(sum[:8])
}

// bearer is the request's bearer key and its hash (ok false without one);
// the hash is computed once per request (authorize and clientKey both
// want it). The scheme is case-insensitive (RFC 7235: "bearer KEY" is
// "Bearer KEY").
func bearer(ctx *fasthttp.RequestCtx) (key string, sum [sha256.Size]byte, ok bool) {
	scheme, key, _ := strings.Cut(string(ctx.Request.Header.Peek("Authorization")), " ")
	key = strings.TrimLeft(key, " ")
	if !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", sum, false
	}
	if v, cached := ctx.UserValue(keyHashValue).([sha256.Size]byte); cached {
		return key, v, true
	}
	sum = configs.HashKey(key)
	ctx.SetUserValue(keyHashValue, sum)
	return key, sum, true
}

// keyHashValue is the request's user value holding its bearer key's hash.
const keyHashValue = "octet.keyhash"
