package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/daftka/daftka"
)

// Every /v1 handler validates in the same order, and stops at the first
// problem: path parameters (topic or group name, partition), query
// parameters, media type (415), body size (413), JSON syntax (400), body
// fields (400). Only then does it call the API, which checks what needs the
// cluster's state (existence, config ranges, record sizes, live nodes).

func pathTopic(r *http.Request) (string, *problem) {
	t := r.PathValue("topic")
	if !daftka.ValidName(t) {
		return "", newProblem(daftka.CodeInvalidTopicName, nameRule("topic name", t))
	}
	return t, nil
}

// pathTopicNoQuery is pathTopic for a request that takes no query
// parameters: a bad topic name is reported first, then any query.
func pathTopicNoQuery(r *http.Request) (string, *problem) {
	t, p := pathTopic(r)
	if p == nil {
		p = noQuery(r)
	}
	return t, p
}

func pathTopicPartition(r *http.Request) (string, int32, *problem) {
	t, p := pathTopic(r)
	if p != nil {
		return "", 0, p
	}
	part, p := parsePartition(r.PathValue("partition"))
	return t, part, p
}

func pathGroup(r *http.Request) (string, *problem) {
	gr := r.PathValue("group")
	if !daftka.ValidName(gr) {
		return "", newProblem(daftka.CodeInvalidGroupName, nameRule("group name", gr))
	}
	return gr, nil
}

// noQuery rejects any query parameter, for endpoints that take none.
func noQuery(r *http.Request) *problem {
	_, p := parseQuery(r.URL.RawQuery)
	return p
}

// adminTimeout bounds the calls that change or read metadata (topics,
// partitions, group offsets): they have no wait of their own, but a
// control plane that cannot reach its quorum must not hold the request
// forever.
const adminTimeout = 30 * time.Second

// adminContext is the request's context bounded by adminTimeout (or
// RequestTimeout, when larger).
func (g *gateway) adminContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), max(adminTimeout, g.opts.RequestTimeout))
}

func (g *gateway) fail(w http.ResponseWriter, r *http.Request, p *problem) {
	g.writeProblem(w, r, epDefault, p)
}

func (g *gateway) createTopic(w http.ResponseWriter, r *http.Request) {
	if p := noQuery(r); p != nil {
		g.fail(w, r, p)
		return
	}
	v, p := g.readBody(w, r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	spec, p := decodeCreateTopic(&v)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	if info := infoFrom(r.Context()); info != nil {
		info.topic = spec.Name
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	t, err := g.api.CreateTopic(ctx, spec)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	w.Header().Set("Location", "/v1/topics/"+url.PathEscape(t.Name))
	writeJSON(w, http.StatusCreated, topicOut(t))
}

func (g *gateway) listTopics(w http.ResponseWriter, r *http.Request) {
	if p := noQuery(r); p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	ts, err := g.api.ListTopics(ctx)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	out := topicListJSON{Topics: make([]topicJSON, 0, len(ts))}
	for _, t := range ts {
		out.Topics = append(out.Topics, topicOut(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *gateway) describeTopic(w http.ResponseWriter, r *http.Request) {
	topic, p := pathTopicNoQuery(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	t, err := g.api.DescribeTopic(ctx, topic)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	writeJSON(w, http.StatusOK, topicOut(t))
}

func (g *gateway) deleteTopic(w http.ResponseWriter, r *http.Request) {
	topic, p := pathTopicNoQuery(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	if err := g.api.DeleteTopic(ctx, topic); err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (g *gateway) patchConfig(w http.ResponseWriter, r *http.Request) {
	topic, p := pathTopicNoQuery(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	v, p := g.readBody(w, r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	patch, p := decodeConfig(&v, "")
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	cfg, err := g.api.UpdateTopicConfig(ctx, topic, patch)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (g *gateway) describePartition(w http.ResponseWriter, r *http.Request) {
	topic, part, p := pathTopicPartition(r)
	if p == nil {
		p = noQuery(r)
	}
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	pi, err := g.api.DescribePartition(ctx, topic, part)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	writeJSON(w, http.StatusOK, partitionOut(pi))
}

func (g *gateway) produce(w http.ResponseWriter, r *http.Request) {
	topic, p := pathTopicNoQuery(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	v, p := g.readBody(w, r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	req, p := decodeProduce(&v, g.opts.MaxBatchRecords)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.RequestTimeout)
	defer cancel()
	results, err := g.api.Produce(ctx, topic, req)
	out, committed, p := produceAnswer(results, err, len(req.Records))
	if len(committed) > 0 {
		n := 0
		for _, i := range committed {
			rec := &req.Records[i]
			n += recordBytes(rec.Key, rec.Value, rec.Headers)
		}
		g.topicCounter("daftka_gateway_produced_records_total", topic).Add(len(committed))
		g.topicCounter("daftka_gateway_produced_bytes_total", topic).Add(n)
	}
	if p != nil {
		g.fail(w, r, p)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// produceAnswer turns what Produce returned for n records into the 200 body
// or a problem, and lists the indexes of the records known committed. A
// problem carries "offsets" only when the results say record by record
// which committed and which did not (a partial failure); when they cannot
// (an error with no per-record errors, or the wrong number of results), no
// record is claimed committed.
func produceAnswer(results []daftka.ProduceResult, err error, n int) (producedJSON, []int, *problem) {
	if len(results) != n {
		if err == nil {
			err = fmt.Errorf("gateway: Produce returned %d results for %d records and no error", len(results), n)
		}
		return producedJSON{}, nil, problemFrom(err)
	}
	failed := 0
	for _, res := range results {
		if res.Err != nil {
			failed++
			if err == nil {
				err = res.Err
			}
		}
	}
	if err == nil {
		out := producedJSON{Offsets: make([]producedOffset, n)}
		committed := make([]int, n)
		for i, res := range results {
			out.Offsets[i] = producedOffset{Partition: res.Partition, Offset: res.Offset}
			committed[i] = i
		}
		return out, committed, nil
	}
	p := problemFrom(err)
	if failed == 0 {
		return producedJSON{}, nil, p
	}
	var committed []int
	p.Offsets = make([]produceOutcome, n)
	for i, res := range results {
		if res.Err != nil {
			code := daftka.CodeInternal
			var de *daftka.Error
			if errors.As(res.Err, &de) {
				if _, ok := codeTable[de.Code]; ok {
					code = de.Code
				}
			}
			p.Offsets[i] = produceOutcome{Partition: res.Partition, ErrorCode: code}
			continue
		}
		off := res.Offset
		p.Offsets[i] = produceOutcome{Partition: res.Partition, Offset: &off}
		committed = append(committed, i)
	}
	return producedJSON{}, committed, p
}

func (g *gateway) topicCounter(name, topic string) *metrics.Counter {
	return g.met.GetOrCreateCounter(name + `{topic="` + topic + `"}`)
}

// fetchOnce reads one batch for fetch and stream; without an offset, from
// the partition's log start (daftka.OffsetEarliest).
func (g *gateway) fetchOnce(ctx context.Context, topic string, part int32, fp fetchParams) (daftka.FetchResult, error) {
	offset := fp.offset
	if !fp.hasOffset {
		offset = daftka.OffsetEarliest
	}
	req := daftka.FetchRequest{Offset: offset, MaxRecords: fp.maxRecs, MaxBytes: fp.maxBytes, Wait: fp.wait, TopicID: fp.topicID}
	return g.api.Fetch(ctx, topic, part, req)
}

func (g *gateway) fetch(w http.ResponseWriter, r *http.Request) {
	topic, part, p := pathTopicPartition(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	fp, p := parseFetchParams(r.URL.RawQuery)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx := r.Context()
	if fp.wait > 0 {
		// A long poll ends when the server begins to shut down.
		var stop func()
		ctx, stop = g.withShutdown(ctx, r)
		defer stop()
	}
	fctx, cancel := context.WithTimeout(ctx, fp.wait+g.opts.RequestTimeout)
	defer cancel()
	res, err := g.fetchOnce(fctx, topic, part, fp)
	if err != nil {
		p := problemFrom(err)
		if errors.Is(context.Cause(ctx), errShuttingDown) {
			p = newProblem(daftka.CodeShuttingDown, "the node is shutting down; retry on another node or after the restart")
		}
		g.fail(w, r, p)
		return
	}
	out, p := fetchOut(res, fp.encoding)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	g.countFetched(topic, res.Records)
	writeJSON(w, http.StatusOK, out)
}

func (g *gateway) countFetched(topic string, recs []daftka.Record) {
	if len(recs) == 0 {
		return
	}
	n := 0
	for _, rec := range recs {
		n += recordBytes(rec.Key, rec.Value, rec.Headers)
	}
	g.topicCounter("daftka_gateway_fetched_records_total", topic).Add(len(recs))
	g.topicCounter("daftka_gateway_fetched_bytes_total", topic).Add(n)
}

func (g *gateway) commitOffsets(w http.ResponseWriter, r *http.Request) {
	group, p := pathGroup(r)
	if p == nil {
		p = noQuery(r)
	}
	if p != nil {
		g.fail(w, r, p)
		return
	}
	v, p := g.readBody(w, r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	offsets, p := decodeCommit(&v)
	if p != nil {
		g.writeProblem(w, r, epGroupCommit, p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.RequestTimeout)
	defer cancel()
	if err := g.api.CommitOffsets(ctx, group, offsets); err != nil {
		g.writeProblem(w, r, epGroupCommit, problemFrom(err))
		return
	}
	out := committedJSON{Offsets: make([]groupOffsetJSON, len(offsets))}
	for i, o := range offsets {
		out.Offsets[i] = groupOffsetJSON(o)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *gateway) groupOffsets(w http.ResponseWriter, r *http.Request) {
	group, p := pathGroup(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	q, p := parseQuery(r.URL.RawQuery, "topic")
	if p != nil {
		g.fail(w, r, p)
		return
	}
	topic, ok := q["topic"]
	if ok && !daftka.ValidName(topic) {
		g.fail(w, r, newProblem(daftka.CodeInvalidTopicName, nameRule("topic name", topic)))
		return
	}
	if info := infoFrom(r.Context()); info != nil {
		info.topic = topic
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	infos, err := g.api.GroupOffsets(ctx, group, topic)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	out := groupOffsetsJSON{Offsets: make([]groupOffsetInfoJSON, len(infos))}
	for i, o := range infos {
		out.Offsets[i] = groupOffsetInfoJSON(o)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *gateway) offsetForTime(w http.ResponseWriter, r *http.Request) {
	topic, part, p := pathTopicPartition(r)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	q, p := parseQuery(r.URL.RawQuery, "timestamp_ms")
	if p != nil {
		g.fail(w, r, p)
		return
	}
	if _, ok := q["timestamp_ms"]; !ok {
		g.fail(w, r, newProblem(daftka.CodeInvalidField, "timestamp_ms is required"))
		return
	}
	ts, p := q.intParam("timestamp_ms", daftka.CodeInvalidField, 0, 0, maxTimestampMs)
	if p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	off, err := g.api.OffsetForTimestamp(ctx, topic, part, time.UnixMilli(ts))
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	writeJSON(w, http.StatusOK, timeOffsetJSON{Offset: off})
}

// maxTimestampMs is the largest timestamp_ms: int64 milliseconds.
const maxTimestampMs = 1<<63 - 1

func (g *gateway) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type clusterNodeJSON struct {
	ID         uint64 `json:"id"`
	GatewayURL string `json:"gateway_url"`
	State      string `json:"state"`
	Replicas   int    `json:"replicas"`
	Leaders    int    `json:"leaders"`
}

type clusterJSON struct {
	Nodes           []clusterNodeJSON `json:"nodes"`
	Rebalancer      uint64            `json:"rebalancer"`
	MetadataMembers []uint64          `json:"metadata_members"`
}

func (g *gateway) cluster(w http.ResponseWriter, r *http.Request) {
	if p := noQuery(r); p != nil {
		g.fail(w, r, p)
		return
	}
	ctx, cancel := g.adminContext(r)
	defer cancel()
	c, err := g.api.Cluster(ctx)
	if err != nil {
		g.fail(w, r, problemFrom(err))
		return
	}
	out := clusterJSON{Nodes: make([]clusterNodeJSON, 0, len(c.Nodes)), Rebalancer: c.Rebalancer, MetadataMembers: c.MetadataMembers}
	if out.MetadataMembers == nil {
		out.MetadataMembers = []uint64{}
	}
	for _, n := range c.Nodes {
		out.Nodes = append(out.Nodes, clusterNodeJSON{ID: n.ID, GatewayURL: n.GatewayURL, State: n.State, Replicas: n.Replicas, Leaders: n.Leaders})
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := g.api.Ready(ctx); err != nil {
		p := problemFrom(err)
		if statusFor(p.Code, epDefault) != http.StatusServiceUnavailable {
			// Not ready is a 503 whatever the reason; keep the reason's
			// text only when it is one of the catalog's.
			if p.Code == daftka.CodeInternal {
				p.Detail = "not ready"
			}
			p.Code = daftka.CodeUnavailable
		}
		g.fail(w, r, p)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (g *gateway) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	g.met.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
