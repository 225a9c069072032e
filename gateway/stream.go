package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/daftka/daftka"
)

// Streaming consume: GET /v1/topics/{topic}/partitions/{p}/records/stream.
//
// The stream is a loop of Fetch calls, each waiting up to streamWait for a
// record, all pinned to the topic incarnation the first one read
// (daftka.FetchRequest.TopicID). Problems found by the first Fetch (bad offset, unknown topic, ...)
// are ordinary problem answers; once the 200 is sent, an error is written as
// one final line holding a problem document, and the stream ends.
const (
	// streamWait is how long one Fetch of a stream waits; an idle stream
	// writes a heartbeat line "{}" after each empty Fetch, well within the
	// contract's "at least every 10 s".
	streamWait = 5 * time.Second
	// streamWriteTimeout bounds one write to a stream's client: a client
	// that stops reading is cut off rather than holding the handler.
	streamWriteTimeout = 30 * time.Second
	// streamMinIdle keeps a Fetch that returns empty at once from spinning.
	streamMinIdle = 50 * time.Millisecond
)

func (g *gateway) stream(w http.ResponseWriter, r *http.Request) {
	topic, part, p := pathTopicPartition(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	q, p := parseQuery(r.URL.RawQuery, "offset", "encoding")
	if p != nil {
		g.fail(w, r, p)
		return
	}
	fp := fetchParams{maxRecs: defaultMaxRecords, maxBytes: defaultMaxBytes}
	if fp.offset, fp.hasOffset, p = q.offset(); p != nil {
		g.fail(w, r, p)
		return
	}
	if fp.encoding, p = q.encoding(); p != nil {
		g.fail(w, r, p)
		return
	}
	ctx := r.Context()
	first, cancel := context.WithTimeout(ctx, g.opts.RequestTimeout)
	res, err := g.fetchOnce(first, topic, part, fp)
	cancel()
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	if len(res.Records) > 0 {
		if _, p := recordOut(res.Records[0], fp.encoding); p != nil {
			g.fail(w, r, p)
			return
		}
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	// The server's WriteTimeout, if any, was meant for one answer, not a
	// stream: each write gets its own deadline instead.
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	if r.Method == http.MethodHead {
		return // the headers are the whole answer
	}

	// The stream ends when the client goes, or when the server begins to
	// shut down: then with a final shutting_down line, so the client can
	// tell it from a network fault and resume at next_offset elsewhere.
	ctx, stop := g.withShutdown(ctx, r)
	defer stop()

	fp.hasOffset = true
	fp.wait = streamWait
	// Every later fetch reads the incarnation of the topic the first one
	// read: a topic deleted and created again under the same name while
	// the stream waits between fetches (paused by a 429, or blocked on a
	// slow client) ends the stream with topic_not_found rather than go on
	// with the new topic's records at the old topic's offsets.
	fp.topicID = res.TopicID
	lastLine := time.Now() // of the last line written, for heartbeats
	for {
		if !g.streamBatch(w, r, rc, topic, res, fp.encoding) {
			return
		}
		if len(res.Records) > 0 {
			lastLine = time.Now()
		}
		fp.offset = res.NextOffset
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, fp.wait+g.opts.RequestTimeout)
		res, err = g.fetchOnce(wctx, topic, part, fp)
		cancel()
		if ctx.Err() != nil {
			g.streamCut(ctx, w, r, rc, fp.offset)
			return
		}
		if err != nil {
			p := problemFrom(err)
			if p.Code != daftka.CodeQuotaExceeded && p.Code != daftka.CodeBackpressure {
				g.streamLine(w, rc, finishProblem(r, epDefault, p))
				return
			}
			// A refusal to retry later (429): the stream slows down
			// rather than ends, heartbeating while it waits.
			if !g.streamPause(ctx, w, rc, p.retryAfter, &lastLine) {
				if ctx.Err() != nil {
					g.streamCut(ctx, w, r, rc, fp.offset)
				}
				return
			}
			res = daftka.FetchResult{NextOffset: fp.offset}
			continue
		}
		if len(res.Records) == 0 {
			if d := time.Since(start); d < streamMinIdle {
				time.Sleep(streamMinIdle - d)
			}
			if !g.streamLine(w, rc, []byte("{}\n")) {
				return
			}
			lastLine = time.Now()
		}
	}
}

// streamCut ends a stream whose context ended: with a shutting_down line
// when the server is shutting down; silently when the client has gone.
func (g *gateway) streamCut(ctx context.Context, w http.ResponseWriter, r *http.Request, rc *http.ResponseController, offset int64) {
	if errors.Is(context.Cause(ctx), errShuttingDown) {
		g.streamLine(w, rc, finishProblem(r, epDefault, newProblem(daftka.CodeShuttingDown,
			fmt.Sprintf("the node is shutting down; resume at offset %d on another node or after the restart", offset))))
	}
}

// streamPause waits d (1 s when unset, as Retry-After says) before a
// stream retries a refused fetch, writing a heartbeat line whenever
// streamWait has passed since *lastLine (which it updates), so that a
// stream held back by refusal after refusal still heartbeats. It reports
// whether the stream goes on: false when ctx ended or a write failed.
func (g *gateway) streamPause(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, d time.Duration, lastLine *time.Time) bool {
	if d <= 0 {
		d = time.Second
	}
	end := time.Now().Add(d)
	for {
		now := time.Now()
		if now.Sub(*lastLine) >= streamWait {
			if !g.streamLine(w, rc, []byte("{}\n")) {
				return false
			}
			*lastLine = now
		}
		if !now.Before(end) {
			return true
		}
		t := time.NewTimer(min(end.Sub(now), streamWait-now.Sub(*lastLine)))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// streamBatch writes the records of res, one line each. A record that cannot
// be rendered in enc ends the stream with a problem line. It reports whether
// the stream goes on.
func (g *gateway) streamBatch(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, topic string, res daftka.FetchResult, enc string) bool {
	for i, rec := range res.Records {
		rj, p := recordOut(rec, enc)
		if p != nil {
			g.countFetched(topic, res.Records[:i])
			g.streamLine(w, rc, finishProblem(r, epDefault, p))
			return false
		}
		line, err := marshalJSON(rj)
		if err != nil || !g.streamLine(w, rc, line) {
			g.countFetched(topic, res.Records[:i])
			return false
		}
	}
	g.countFetched(topic, res.Records)
	return true
}

// streamLine writes and flushes one line, reporting success.
func (g *gateway) streamLine(w http.ResponseWriter, rc *http.ResponseController, line []byte) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := w.Write(line); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// errShuttingDown is the cause of a stream's end when its server begins to
// shut down.
var errShuttingDown = errors.New("gateway: the server is shutting down")

// withShutdown returns ctx, cancelled with cause errShuttingDown when the
// server serving r begins to shut down; stop releases it.
func (g *gateway) withShutdown(ctx context.Context, r *http.Request) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if down := g.shutdownSignal(r); down != nil {
		go func() {
			select {
			case <-down:
				cancel(errShuttingDown)
			case <-ctx.Done():
			}
		}()
	}
	return ctx, func() { cancel(nil) }
}

// shutdownSignal returns a channel closed when the http.Server serving r
// begins Shutdown, or nil when r came from no http.Server.
func (g *gateway) shutdownSignal(r *http.Request) <-chan struct{} {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	g.shutMu.Lock()
	defer g.shutMu.Unlock()
	if ch, ok := g.shutdown[srv]; ok {
		return ch
	}
	if g.shutdown == nil {
		g.shutdown = map[*http.Server]chan struct{}{}
	}
	ch := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(ch) })
	g.shutdown[srv] = ch
	return ch
}
